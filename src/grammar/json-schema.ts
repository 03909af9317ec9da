// Which JSON Schemas the grammar engine enforces exactly. xgrammar turns a schema into a grammar,
// but it skips keywords it does not implement (with a warning) and aborts on malformed ones, and
// a skipped keyword means output that parses but does not validate. So a schema is checked here
// first, and every feature outside the set below is named in the answer (a 400 at the server).
//
// Supported: type (a name or a list), enum, const, $ref to "#" or "#/…" (recursion included),
// $defs / definitions, anyOf, oneOf whose branches cannot both match, allOf of one schema;
// strings with minLength / maxLength, or a pattern, or a format (date, time, date-time,
// duration, email, hostname, ipv6, uuid: their RFC 3339 / 5321 / 1123 / 3986 / 4122 syntax, so
// a date is well-formed but not checked against the calendar);
// numbers (unbounded), integers with minimum / maximum / exclusiveMinimum / exclusiveMaximum; arrays
// with items, prefixItems, minItems, maxItems; objects with properties, required and
// additionalProperties. Annotations (title, description, default, examples, …) are allowed
// and do nothing. Output has only the properties a schema declares (plus additionalProperties
// when that is a schema or true), which is valid whatever additionalProperties says.

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

const ANNOTATIONS = new Set([
  'title', 'description', '$schema', '$id', '$comment', 'default', 'examples', 'deprecated',
  'readOnly', 'writeOnly', 'nullable', '$defs', 'definitions',
]);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'array', 'object']);
// xgrammar's other formats are left out: its ipv4 admits leading zeros ("072.0.0.1"), which
// validators reject; uri and the JSON pointers can let characters through that break JSON.
const FORMATS = new Set(['date', 'time', 'date-time', 'duration', 'email', 'hostname', 'ipv6', 'uuid']);
const STRING_KEYS = ['minLength', 'maxLength', 'pattern', 'format'];
const NUMBER_KEYS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
const ARRAY_KEYS = ['items', 'prefixItems', 'minItems', 'maxItems'];
const OBJECT_KEYS = ['properties', 'required', 'additionalProperties'];
const COMBINATORS = ['$ref', 'anyOf', 'oneOf', 'allOf'];
const KNOWN = new Set([
  ...ANNOTATIONS, ...STRING_KEYS, ...NUMBER_KEYS, ...ARRAY_KEYS, ...OBJECT_KEYS, ...COMBINATORS,
  'type', 'enum', 'const',
]);

/** A JSON Pointer token, escaped. */
const token = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * The problems that keep `schema` from being enforced exactly, each as `"<where>: <what>"`
 * (where is a JSON Pointer, `#` the root); empty when it is supported.
 */
export function schemaProblems(schema: unknown): string[] {
  const problems: string[] = [];
  const say = (path: string, what: string): void => {
    problems.push(`${path}: ${what}`);
  };
  const resolve = (ref: string): unknown => {
    if (ref === '#') return schema;
    let cur: unknown = schema;
    // xgrammar follows object keys only, without JSON Pointer unescaping.
    for (const part of ref.slice(2).split('/').filter((p) => p !== '')) {
      if (!isObject(cur) || !(part in cur)) return undefined;
      cur = cur[part];
    }
    return cur;
  };

  const visit = (s: unknown, path: string): void => {
    if (s === true) return;
    if (s === false) return say(path, 'the schema false accepts nothing');
    if (!isObject(s)) return say(path, 'a schema must be an object or a boolean');
    for (const k of Object.keys(s)) {
      if (!KNOWN.has(k)) say(path, `keyword "${k}" is not supported`);
    }
    for (const defs of ['$defs', 'definitions']) {
      if (s[defs] === undefined) continue;
      if (!isObject(s[defs])) say(`${path}/${defs}`, 'must be an object of schemas');
      else for (const [k, v] of Object.entries(s[defs])) visit(v, `${path}/${defs}/${token(k)}`);
    }
    // Keywords xgrammar would skip next to the one it acts on.
    const constraints = Object.keys(s).filter((k) => KNOWN.has(k) && !ANNOTATIONS.has(k));
    const besides = (main: string, allowed: string[] = []) => {
      const other = constraints.filter((k) => k !== main && !allowed.includes(k));
      if (other.length) say(path, `"${main}" together with ${other.map((k) => `"${k}"`).join(', ')} is not supported`);
    };

    if (s.$ref !== undefined) {
      besides('$ref');
      const ref = s.$ref;
      if (typeof ref !== 'string') return say(path, '"$ref" must be a string');
      if (ref !== '#' && !ref.startsWith('#/')) return say(path, `"$ref" ${JSON.stringify(ref)}: only references into this schema ("#/…") are supported`);
      if (/[~%]/.test(ref)) return say(path, `"$ref" ${JSON.stringify(ref)}: escaped characters in references are not supported`);
      if (resolve(ref) === undefined) say(path, `"$ref" ${JSON.stringify(ref)} does not point into the schema`);
      return;
    }
    const types = typeList(s.type, path, say);
    if (s.const !== undefined || s.enum !== undefined) {
      const key = s.const !== undefined ? 'const' : 'enum';
      besides(key, ['type']);
      const values = key === 'const' ? [s.const] : s.enum;
      if (!Array.isArray(values) || values.length === 0) return say(path, '"enum" must be a non-empty array');
      if (types) {
        for (const v of values) {
          if (!types.some((t) => jsonType(v, t))) say(path, `${key} value ${JSON.stringify(v)} is not of type ${types.join(' or ')}`);
        }
      }
      return;
    }
    for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
      if (s[key] === undefined) continue;
      besides(key);
      const list = s[key];
      if (!Array.isArray(list) || list.length === 0) return say(path, `"${key}" must be a non-empty array of schemas`);
      if (key === 'allOf' && list.length > 1) return say(path, '"allOf" with more than one schema is not supported');
      list.forEach((b, i) => visit(b, `${path}/${key}/${i}`));
      if (key === 'oneOf') {
        for (let i = 0; i < list.length; i++) {
          for (let j = i + 1; j < list.length; j++) {
            if (!disjoint(list[i], list[j], resolve)) {
              say(path, `"oneOf" branches ${i} and ${j} may both match (only anyOf can be enforced then)`);
            }
          }
        }
      }
      return;
    }

    // Without "type", xgrammar infers object or array from their keywords, or takes any value.
    const has = (keys: string[]) => keys.some((k) => s[k] !== undefined);
    const kinds = types ?? (has(['properties', 'additionalProperties']) ? ['object'] : has(['items', 'prefixItems']) ? ['array'] : []);
    const misplaced = (keys: string[], type: string, also: string[] = []) => {
      if (kinds.includes(type) || also.some((t) => kinds.includes(t))) return false;
      for (const k of keys) if (s[k] !== undefined) say(path, `"${k}" needs "type": "${type}"`);
      return true;
    };
    if (!misplaced(STRING_KEYS, 'string')) checkString(s, path, say);
    if (!misplaced(NUMBER_KEYS, 'number', ['integer'])) checkNumber(s, path, say, kinds.includes('integer') && !kinds.includes('number'));
    if (!misplaced(ARRAY_KEYS, 'array')) {
      const minItems = count(s, 'minItems', path, say);
      const maxItems = count(s, 'maxItems', path, say);
      if (minItems !== undefined && maxItems !== undefined && minItems > maxItems) say(path, 'minItems is above maxItems');
      if (s.items !== undefined && typeof s.items !== 'boolean') visit(s.items, `${path}/items`);
      if (s.prefixItems !== undefined) {
        if (!Array.isArray(s.prefixItems)) say(path, '"prefixItems" must be an array of schemas');
        else s.prefixItems.forEach((b, i) => visit(b, `${path}/prefixItems/${i}`));
      }
    }
    if (!misplaced(OBJECT_KEYS, 'object')) {
      const props = s.properties;
      if (props !== undefined && !isObject(props)) say(path, '"properties" must be an object of schemas');
      const declared = isObject(props) ? props : {};
      for (const [k, v] of Object.entries(declared)) visit(v, `${path}/properties/${token(k)}`);
      if (s.required !== undefined) {
        if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== 'string')) say(path, '"required" must be an array of strings');
        else {
          for (const r of s.required as string[]) {
            if (!(r in declared)) say(path, `required property ${JSON.stringify(r)} is not in "properties"`);
          }
        }
      }
      const ap = s.additionalProperties;
      if (ap !== undefined && typeof ap !== 'boolean') visit(ap, `${path}/additionalProperties`);
    }
  };
  visit(schema, '#');
  return [...new Set(problems)];
}

function typeList(t: unknown, path: string, say: (p: string, w: string) => void): string[] | null {
  if (t === undefined) return null;
  const list = Array.isArray(t) ? t : [t];
  if (list.length === 0 || list.some((x) => typeof x !== 'string' || !TYPES.has(x)) || new Set(list).size !== list.length) {
    say(path, `"type" ${JSON.stringify(t)} is not a type name or a list of distinct ones (${[...TYPES].join(', ')})`);
    return [];
  }
  return list as string[];
}

function jsonType(v: unknown, t: string): boolean {
  switch (t) {
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number';
    case 'integer': return Number.isInteger(v);
    case 'boolean': return typeof v === 'boolean';
    case 'null': return v === null;
    case 'array': return Array.isArray(v);
    default: return isObject(v);
  }
}

function count(s: Json, k: string, path: string, say: (p: string, w: string) => void): number | undefined {
  const v = s[k];
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 0) {
    say(path, `"${k}" must be a non-negative integer`);
    return undefined;
  }
  return v as number;
}

function checkString(s: Json, path: string, say: (p: string, w: string) => void): void {
  const given = STRING_KEYS.filter((k) => s[k] !== undefined);
  for (const alone of ['pattern', 'format']) {
    if (s[alone] !== undefined && given.length > 1) {
      say(path, `"${alone}" together with ${given.filter((k) => k !== alone).map((k) => `"${k}"`).join(', ')} is not supported`);
    }
  }
  const min = count(s, 'minLength', path, say);
  const max = count(s, 'maxLength', path, say);
  if (min !== undefined && max !== undefined && min > max) say(path, 'minLength is above maxLength');
  if (s.format !== undefined && !(typeof s.format === 'string' && FORMATS.has(s.format))) {
    say(path, `format ${JSON.stringify(s.format)} is not supported (supported: ${[...FORMATS].join(', ')})`);
  }
  if (s.pattern !== undefined) {
    if (typeof s.pattern !== 'string') say(path, '"pattern" must be a string');
    else {
      const bad = patternProblem(s.pattern);
      if (bad) say(path, `pattern ${JSON.stringify(s.pattern)}: ${bad}`);
    }
  }
}

function checkNumber(s: Json, path: string, say: (p: string, w: string) => void, integer: boolean): void {
  let lo = -Infinity;
  let hi = Infinity;
  for (const k of NUMBER_KEYS) {
    const v = s[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      say(path, `"${k}" must be a number`);
      continue;
    }
    if (integer && !Number.isSafeInteger(v)) say(path, `"${k}" of an integer must be a whole number within ±2^53`);
    // xgrammar's ranges of non-integer numbers are wrong (exclusive bounds read as inclusive,
    // 100.5 allowed under a maximum of 100, a fractional bound's "." left as a regex wildcard
    // that lets a quote through); an integer's are right.
    if (!integer) say(path, `"${k}" on a number is not supported (only integers can be bounded)`);
    if (k === 'minimum') lo = Math.max(lo, v);
    if (k === 'exclusiveMinimum') lo = Math.max(lo, integer ? v + 1 : v);
    if (k === 'maximum') hi = Math.min(hi, v);
    if (k === 'exclusiveMaximum') hi = Math.min(hi, integer ? v - 1 : v);
  }
  if (lo > hi || (lo === hi && (s.exclusiveMinimum !== undefined || s.exclusiveMaximum !== undefined) && !integer)) {
    say(path, 'the bounds leave no number');
  }
}

/**
 * Why a `pattern` cannot be enforced (null when it can). xgrammar makes the whole string match
 * the regex (which also satisfies JSON Schema's search semantics); but the regex is placed
 * between the string's quotes as it is, so anything that could match a quote, a backslash or
 * a control character (`.`, `[^…]`, `\s`, `\D`, …) would break the JSON. Only constructs that
 * cannot are accepted: literals, `\d`, `\w`, escaped punctuation, classes of such characters,
 * groups, alternation, quantifiers and anchors.
 */
export function patternProblem(p: string): string | null {
  const unsafe = (c: number) => c < 0x20 || c === 0x22 || c === 0x5c;
  const chars = [...p];
  // One escape at chars[i] === '\\'; returns [code point or null for \d \w, chars consumed] or an error.
  const escape = (i: number, inClass: boolean): [number | null, number] | string => {
    const c = chars[i + 1];
    if (c === undefined) return 'it ends with a lone backslash';
    if (c === 'd' || c === 'w') return [null, 2];
    if ('DWsSbB'.includes(c)) return `\\${c} can match a quote, a backslash or a control character, which would break the JSON`;
    if (/[0-9]/.test(c) && !(inClass && c === '0')) return 'backreferences are not supported';
    if ('pPk'.includes(c)) return `\\${c} is not supported`;
    if (c === 'u' || c === 'x') {
      const m = (c === 'u' ? /^\\u([0-9a-fA-F]{4})/ : /^\\x([0-9a-fA-F]{2})/).exec(chars.slice(i, i + 6).join(''));
      if (!m) return `\\${c} must be followed by hex digits`;
      const code = parseInt(m[1], 16);
      if (unsafe(code)) return `\\${c}${m[1]} is a quote, a backslash or a control character, which would break the JSON`;
      return [code, m[0].length];
    }
    if ('nrtfv0'.includes(c)) return `\\${c} is a control character, which would break the JSON`;
    const code = c.codePointAt(0)!;
    if (unsafe(code)) return 'an escaped quote or backslash would break the JSON';
    return [code, 2];
  };
  for (let i = 0; i < chars.length;) {
    const c = chars[i];
    if (c === '.') return '"." can match a quote, a backslash or a control character, which would break the JSON';
    if (c === '\\') {
      const e = escape(i, false);
      if (typeof e === 'string') return e;
      i += e[1];
      continue;
    }
    if (c === '(') {
      if (chars[i + 1] === '?') {
        if (chars[i + 2] !== ':') return 'lookarounds and named groups are not supported';
        i += 3;
      } else i++;
      continue;
    }
    if (c === '[') {
      i++;
      if (chars[i] === '^') return 'negated classes ([^…]) can match a quote, a backslash or a control character, which would break the JSON';
      let first = true;
      for (;;) {
        const d = chars[i];
        if (d === undefined) return 'a character class is not closed';
        if (d === ']' && !first) {
          i++;
          break;
        }
        first = false;
        let code: number | null;
        if (d === '\\') {
          const e = escape(i, true);
          if (typeof e === 'string') return e;
          code = e[0];
          i += e[1];
        } else {
          code = d.codePointAt(0)!;
          i++;
        }
        if (code !== null && unsafe(code)) return 'a character class holds a quote, a backslash or a control character, which would break the JSON';
        if (chars[i] === '-' && chars[i + 1] !== undefined && chars[i + 1] !== ']' && code !== null) {
          let end: number;
          if (chars[i + 1] === '\\') {
            const e = escape(i + 1, true);
            if (typeof e === 'string') return e;
            if (e[0] === null) return 'a range must end at a character';
            end = e[0];
            i += 1 + e[1];
          } else {
            end = chars[i + 1].codePointAt(0)!;
            i += 2;
          }
          if (end < code) return 'a character range is reversed';
          if ((code <= 0x22 && end >= 0x22) || (code <= 0x5c && end >= 0x5c) || code < 0x20) {
            return 'a character range spans a quote, a backslash or control characters, which would break the JSON';
          }
        }
      }
      continue;
    }
    if (unsafe(c.codePointAt(0)!)) return 'a quote or a control character in a pattern would break the JSON';
    i++;
  }
  return null;
}

// Whether no value can match both schemas, decided conservatively (false when unsure): their
// types cannot overlap, or their const/enum values cannot, or both are objects that require
// a property whose const/enum values cannot overlap (a discriminated union).
function disjoint(a: unknown, b: unknown, resolve: (ref: string) => unknown): boolean {
  const deref = (s: unknown, depth = 0): unknown =>
    isObject(s) && typeof s.$ref === 'string' && depth < 16 ? deref(resolve(s.$ref), depth + 1) : s;
  const x = deref(a);
  const y = deref(b);
  if (!isObject(x) || !isObject(y)) return false;
  const values = (s: Json): unknown[] | null => (s.const !== undefined ? [s.const] : Array.isArray(s.enum) ? s.enum : null);
  const types = (s: Json): Set<string> | null => {
    const v = values(s);
    if (v) return new Set(v.map((e) => (e === null ? 'null' : Array.isArray(e) ? 'array' : typeof e === 'number' ? 'number' : typeof e)));
    if (s.type === undefined) return null;
    const t = new Set((Array.isArray(s.type) ? s.type : [s.type]) as string[]);
    if (t.has('integer')) t.add('number');
    return t;
  };
  const tx = types(x);
  const ty = types(y);
  if (tx && ty && ![...tx].some((t) => ty.has(t))) return true;
  const vx = values(x);
  const vy = values(y);
  const key = (v: unknown) => JSON.stringify(v);
  if (vx && vy) return !vx.some((v) => vy.map(key).includes(key(v)));
  if (isObject(x.properties) && isObject(y.properties) && Array.isArray(x.required) && Array.isArray(y.required)) {
    for (const p of x.required as string[]) {
      if (!(y.required as string[]).includes(p)) continue;
      const px = deref(x.properties[p]);
      const py = deref(y.properties[p]);
      if (!isObject(px) || !isObject(py)) continue;
      const ax = values(px);
      const ay = values(py);
      if (ax && ay && !ax.some((v) => ay.map(key).includes(key(v)))) return true;
    }
  }
  return false;
}
