// JSON Schema validation for the structured-output tests: ajv (draft 2020-12; draft-07 schemas
// validate the same for what the tests use). Formats are not asserted by ajv here (that needs
// ajv-formats); the tests that use one check it with its own regex.

import ajv2020 from 'ajv/dist/2020.js';

// A CommonJS module: its default import is module.exports, the class itself.
const Ajv2020 = ajv2020 as unknown as typeof ajv2020.default;
const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });

/** Why `value` does not validate against `schema`, or null when it does. */
export function schemaErrors(schema: unknown, value: unknown): string | null {
  const { $schema: _, ...rest } = schema as Record<string, unknown>;
  const validate = ajv.compile(typeof schema === 'boolean' ? schema : rest);
  return validate(value) ? null : ajv.errorsText(validate.errors);
}

/** Parses `text` as JSON and validates it; throws an Error saying what is wrong. */
export function assertValidJson(schema: unknown, text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON (${(e as Error).message}): ${text}`);
  }
  const errors = schemaErrors(schema, value);
  if (errors) throw new Error(`${errors}: ${text}`);
  return value;
}
