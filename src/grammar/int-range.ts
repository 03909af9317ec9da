// Integer ranges as grammar, written here: xgrammar 0.1.27 writes wrong ones ({minimum: 0,
// maximum: 120} admits 129, {minimum: 7} admits 1, {maximum: -3} admits -1). Each bounded
// integer of a schema is swapped for a placeholder string constant before xgrammar converts the
// schema, and the placeholder's literal in its EBNF for the rule made here (worker.js does the
// swap back). The rule admits exactly the integers of the range, written as JSON writes them
// (no leading zeros, no "-0").

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** EBNF for the decimal strings of the integers in [lo, hi] of the same length (lo <= hi). */
function sameLength(lo: string, hi: string): string {
  if (lo === hi) return `"${lo}"`;
  if (lo.length === 1) return `[${lo}-${hi}]`;
  const [a, b] = [lo[0]!, hi[0]!];
  const restLo = lo.slice(1);
  const restHi = hi.slice(1);
  const n = restLo.length;
  if (a === b) return `"${a}" ${group(sameLength(restLo, restHi))}`;
  const any = `[0-9]{${n}}`;
  if (/^0*$/.test(restLo) && /^9*$/.test(restHi)) return `[${a}-${b}] ${any}`;
  const parts = [`"${a}" ${group(sameLength(restLo, '9'.repeat(n)))}`];
  if (Number(b) - Number(a) > 1) parts.push(`[${Number(a) + 1}-${Number(b) - 1}] ${any}`);
  parts.push(`"${b}" ${group(sameLength('0'.repeat(n), restHi))}`);
  return parts.join(' | ');
}

const group = (e: string) => (e.includes(' | ') ? `(${e})` : e);

/** EBNF for the positive integers from `lo` (>= 1) to `hi` (null: no end). */
function positive(lo: bigint, hi: bigint | null): string {
  const parts: string[] = [];
  const a = lo.toString();
  const b = hi === null ? null : hi.toString();
  const longest = b === null ? a.length : b.length;
  for (let len = a.length; len <= longest; len++) {
    const from = len === a.length ? a : `1${'0'.repeat(len - 1)}`;
    const to = b !== null && len === b.length ? b : '9'.repeat(len);
    parts.push(group(sameLength(from, to)));
  }
  if (b === null) parts.push(`[1-9] [0-9]{${a.length}} [0-9]*`); // every longer number
  return parts.join(' | ');
}

/** EBNF for the JSON integers in [lo, hi] (null: unbounded on that side); lo <= hi. */
export function intRangeEbnf(lo: bigint | null, hi: bigint | null): string {
  const parts: string[] = [];
  if (lo === null || lo < 0n) {
    // -n for n in [max(1, -hi), -lo]
    const from = hi !== null && hi < 0n ? -hi : 1n;
    parts.push(`"-" (${positive(from, lo === null ? null : -lo)})`);
  }
  if ((lo === null || lo <= 0n) && (hi === null || hi >= 0n)) parts.push('"0"');
  if (hi === null || hi > 0n) parts.push(positive(lo !== null && lo > 1n ? lo : 1n, hi));
  return parts.join(' | ');
}

/** The bounds of an integer schema as an inclusive range (exclusive ones moved in by one). */
function bounds(s: Json): [bigint | null, bigint | null] {
  const big = (k: string) => (typeof s[k] === 'number' ? BigInt(s[k] as number) : null);
  let lo = big('minimum');
  let hi = big('maximum');
  const xlo = big('exclusiveMinimum');
  const xhi = big('exclusiveMaximum');
  if (xlo !== null && (lo === null || xlo + 1n > lo)) lo = xlo + 1n;
  if (xhi !== null && (hi === null || xhi - 1n < hi)) hi = xhi - 1n;
  return [lo, hi];
}

const BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];

/**
 * `schema` with each bounded integer replaced by a placeholder constant, and the EBNF that
 * each placeholder's literal (as xgrammar writes it, `"\"NAME\""`) stands for. A schema with
 * no bounded integer comes back as it is. Call it on checked schemas (json-schema.ts): bounds
 * are whole numbers there.
 */
export function withIntRanges(schema: unknown): { schema: unknown; rules: Record<string, string> } {
  const rules: Record<string, string> = {};
  const text = JSON.stringify(schema);
  let prefix = '__dsv3_int';
  while (text.includes(prefix)) prefix += '_';
  const walk = (s: unknown): unknown => {
    if (Array.isArray(s)) return s.map(walk);
    if (!isObject(s)) return s;
    const out: Json = {};
    for (const [k, v] of Object.entries(s)) out[k] = k === 'enum' || k === 'const' ? v : walk(v);
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type];
    if (!types.includes('integer') || !BOUNDS.some((k) => s[k] !== undefined) || s.enum !== undefined || s.const !== undefined) {
      return out;
    }
    const [lo, hi] = bounds(s);
    const name = `${prefix}_${Object.keys(rules).length}__`;
    rules[`"\\"${name}\\""`] = `(${intRangeEbnf(lo, hi)})`;
    const placeholder = { const: name };
    for (const k of BOUNDS) delete out[k];
    if (types.length === 1) return placeholder;
    // ["integer", "null", …]: the other types keep the schema's other keywords.
    const others = { ...out, type: types.filter((t) => t !== 'integer') };
    return { anyOf: [placeholder, others] };
  };
  const result = walk(schema);
  return Object.keys(rules).length ? { schema: result, rules } : { schema, rules };
}
