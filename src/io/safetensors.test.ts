// Tests for the safetensors reader/writer: round trips of every dsv3 dtype, sharded checkpoints,
// the real golden fp8 checkpoint, and one hand-built bad file per validation rule. Every bad file
// is written for real into a temp folder; nothing is mocked.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DsError, type ErrorCode } from '../errors.ts';
import type { DType } from '../tensor/dtypes.ts';
import {
  Checkpoint,
  SafetensorsFile,
  writeCheckpoint,
  writeSafetensors,
  type TensorSpec,
} from './safetensors.ts';

const GOLDEN_DIR = fileURLToPath(new URL('../../../shared/golden/models/v3-fp8/', import.meta.url));

function tmp(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'dsv3-st-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Write a file as [u64 header length][header text][data], optionally lying about the length. */
function rawFile(path: string, header: unknown, data: Uint8Array | number = 0, n?: number): void {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(n ?? text.byteLength));
  const body = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  writeFileSync(path, Buffer.concat([prefix, text, body]));
}

function expectDsError(fn: () => unknown, code: ErrorCode, ...mentions: string[]): DsError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof DsError, `expected DsError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  for (const m of mentions) {
    assert.ok(err.message.includes(m), `"${err.message}" should mention ${m}`);
  }
  return err;
}

const openErr = (p: string, code: ErrorCode, ...m: string[]): DsError =>
  expectDsError(() => SafetensorsFile.open(p), code, ...m);
const ckErr = (dir: string, code: ErrorCode, ...m: string[]): DsError =>
  expectDsError(() => Checkpoint.open(dir), code, ...m);

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + 3) & 0xff;
  return b;
}

const F32_BYTES_4 = new Uint8Array(new Float32Array([1.5, -2, 0.25, 1e-3]).buffer);

/** A valid two-tensor header: "a" F32[2] at [0,8], "b" BF16[3] at [8,14]. */
const twoTensors = () => ({
  __metadata__: { format: 'pt' },
  a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
  b: { dtype: 'BF16', shape: [3], data_offsets: [8, 14] },
});

test('round trip of every dsv3 dtype, a scalar and a zero-size tensor', (t) => {
  const dir = tmp(t);
  const path = join(dir, 'x.safetensors');
  const specs: TensorSpec[] = [
    { name: 'w.f8', dtype: 'F8_E4M3', shape: [3, 5] },
    { name: 'w.bf16', dtype: 'BF16', shape: [7] },
    { name: 'scale', dtype: 'F32', shape: [2, 2] },
    { name: 'w.f16', dtype: 'F16', shape: [1, 3] },
    { name: 'scalar', dtype: 'F32', shape: [] },
    { name: 'empty', dtype: 'BF16', shape: [4, 0] },
  ];
  const size: Record<DType, number> = { F32: 4, BF16: 2, F16: 2, F8_E4M3: 1 };
  const payload = new Map<string, Uint8Array>();
  specs.forEach((s, i) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    payload.set(s.name, s.name === 'scale' ? F32_BYTES_4 : bytes(n * size[s.dtype], i));
  });
  payload.get('w.f8')!.set([0x7e, 0xfe, 0x7f, 0x00, 0x80, 0x01]); // ±448, NaN, ±0, subnormal
  const calls: string[] = [];
  writeSafetensors(path, specs, (name) => (calls.push(name), payload.get(name)!), { note: 'hi' });
  // File order: element size descending, then name.
  assert.deepEqual(calls, ['scalar', 'scale', 'empty', 'w.bf16', 'w.f16', 'w.f8']);

  const raw = readFileSync(path);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal(n % 8, 0, 'header padded to a multiple of 8');
  const headerText = raw.subarray(8, 8 + n).toString();
  assert.ok(headerText.startsWith('{"__metadata__":{"format":"pt","note":"hi"},"empty":'));

  const f = SafetensorsFile.open(path);
  t.after(() => f.close());
  assert.deepEqual(f.metadata, { format: 'pt', note: 'hi' });
  assert.equal(f.entries.size, specs.length);
  for (const s of specs) {
    const e = f.entries.get(s.name)!;
    assert.equal(e.offset % size[s.dtype], 0, `${s.name} is naturally aligned`);
    assert.equal(e.file, path);
    const r = f.read(s.name);
    assert.equal(r.dtype, s.dtype);
    assert.deepEqual(r.shape, s.shape);
    assert.deepEqual(r.data, payload.get(s.name));
    assert.equal(r.data.byteOffset, 0);
    assert.equal(r.data.buffer.byteLength, r.data.byteLength, 'owns its ArrayBuffer');
  }
  const scale = [...new Float32Array(f.read('scale').data.buffer)];
  assert.deepEqual(scale, [1.5, -2, 0.25, 1e-3].map(Math.fround));
  assert.equal(f.read('scalar').data.byteLength, 4);
  assert.equal(f.read('empty').data.byteLength, 0);
  f.close();
  assert.deepEqual(f.read('w.f8').data, payload.get('w.f8'), 'read after close reopens');
});

test('an empty tensor list writes a valid file', (t) => {
  const path = join(tmp(t), 'e.safetensors');
  writeSafetensors(path, [], () => assert.fail('no data expected'));
  const f = SafetensorsFile.open(path);
  assert.equal(f.entries.size, 0);
  assert.deepEqual(f.metadata, { format: 'pt' });
  f.close();
});

test('checkpoint with one model.safetensors: names, has, entry, read, MISSING_TENSOR', (t) => {
  const dir = tmp(t);
  const specs: TensorSpec[] = [
    { name: 'b', dtype: 'BF16', shape: [3] },
    { name: 'a', dtype: 'F32', shape: [2] },
  ];
  writeCheckpoint(dir, specs, (name) => bytes(name === 'a' ? 8 : 6, name.charCodeAt(0)));
  assert.deepEqual(readdirSync(dir).sort(), ['model.safetensors']);
  const ck = Checkpoint.open(dir);
  t.after(() => ck.close());
  assert.equal(ck.dir, dir);
  assert.deepEqual(ck.names(), ['a', 'b']);
  assert.ok(ck.has('a') && !ck.has('c'));
  assert.equal(ck.entry('b').dtype, 'BF16');
  assert.deepEqual(ck.read('a').data, bytes(8, 'a'.charCodeAt(0)));
  expectDsError(() => ck.entry('model.norm.weight'), 'MISSING_TENSOR', '"model.norm.weight"', dir);
  expectDsError(() => ck.read('nope'), 'MISSING_TENSOR', '"nope"', dir);
});

test('sharded round trip: index, total_size, every tensor readable, one data() call each', (t) => {
  const dir = tmp(t);
  const specs: TensorSpec[] = [];
  for (let i = 0; i < 7; i++) {
    specs.push({ name: `model.layers.${i}.w`, dtype: i % 2 ? 'BF16' : 'F8_E4M3', shape: [10, 10] });
  }
  specs.push({ name: 'big', dtype: 'F32', shape: [100] }); // 400 bytes: larger than a shard
  specs.push({ name: 'scalar', dtype: 'F32', shape: [] });
  const sizeOf = (s: TensorSpec) => (s.dtype === 'F32' ? 4 : s.dtype === 'BF16' ? 2 : 1) *
    s.shape.reduce((a, b) => a * b, 1);
  const calls = new Map<string, number>();
  const data = (name: string) => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    return bytes(sizeOf(specs.find((s) => s.name === name)!), name.length);
  };
  writeFileSync(join(dir, 'model.safetensors'), 'stale'); // must be removed by the writer
  writeCheckpoint(dir, specs, data, { maxShardBytes: 250 });
  assert.ok(specs.every((s) => calls.get(s.name) === 1));
  const files = readdirSync(dir).sort();
  assert.ok(!files.includes('model.safetensors'), 'stale single file removed');
  const shards = files.filter((f) => f.endsWith('.safetensors'));
  assert.ok(shards.length >= 3, `several shards: ${shards}`);
  const five = (k: number) => String(k).padStart(5, '0');
  const k = shards.length;
  shards.forEach((s, i) => assert.equal(s, `model-${five(i + 1)}-of-${five(k)}.safetensors`));
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.metadata.total_size, specs.reduce((a, s) => a + sizeOf(s), 0));
  assert.deepEqual(Object.keys(index.weight_map).sort(), specs.map((s) => s.name).sort());

  const ck = Checkpoint.open(dir);
  t.after(() => ck.close());
  assert.deepEqual(ck.names(), specs.map((s) => s.name).sort());
  for (const s of specs) {
    assert.deepEqual(ck.read(s.name).data, bytes(sizeOf(s), s.name.length));
    assert.equal(ck.entry(s.name).file, join(dir, index.weight_map[s.name]));
  }
  ck.close();

  // Rewriting the same folder as one file drops the index and the shards.
  writeCheckpoint(dir, specs, data);
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  // forceIndex with everything in one shard.
  writeCheckpoint(dir, specs, data, { forceIndex: true });
  assert.deepEqual(readdirSync(dir).sort(), [
    'model-00001-of-00001.safetensors',
    'model.safetensors.index.json',
  ]);
  const ck2 = Checkpoint.open(dir);
  assert.equal(ck2.names().length, specs.length);
  ck2.close();
});

test('folder without index or model.safetensors: every *.safetensors is read', (t) => {
  const dir = tmp(t);
  writeSafetensors(join(dir, 'one.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1] }], () =>
    bytes(4, 1));
  writeSafetensors(join(dir, 'two.safetensors'), [{ name: 'y', dtype: 'F16', shape: [1] }], () =>
    bytes(2, 2));
  const ck = Checkpoint.open(dir);
  assert.deepEqual(ck.names(), ['x', 'y']);
  assert.deepEqual(ck.read('y').data, bytes(2, 2));
  ck.close();
  writeSafetensors(join(dir, 'three.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1] }], () =>
    bytes(4, 1));
  ckErr(dir, 'BAD_SAFETENSORS', '"x"', 'one.safetensors', 'three.safetensors');
});

test('reading one tensor reads only its bytes (5 GB sparse file, tensor past 4 GiB)', (t) => {
  const path = join(tmp(t), 'sparse.safetensors');
  const bigBytes = 5 * 2 ** 30;
  const header = Buffer.from(JSON.stringify({
    big: { dtype: 'F8_E4M3', shape: [bigBytes], data_offsets: [0, bigBytes] },
    small: { dtype: 'F32', shape: [4], data_offsets: [bigBytes, bigBytes + 16] },
  }));
  const fd = openSync(path, 'w');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.byteLength));
  writeSync(fd, prefix, 0, 8, 0);
  writeSync(fd, header, 0, header.byteLength, 8);
  const dataStart = 8 + header.byteLength;
  writeSync(fd, F32_BYTES_4, 0, 16, dataStart + bigBytes);
  ftruncateSync(fd, dataStart + bigBytes + 16);
  closeSync(fd);
  const f = SafetensorsFile.open(path);
  t.after(() => f.close());
  assert.equal(f.entries.get('small')!.offset, dataStart + bigBytes);
  const before = process.memoryUsage().arrayBuffers;
  assert.deepEqual(f.read('small').data, F32_BYTES_4);
  assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20, 'did not load the big tensor');
});

test('golden v3-fp8 checkpoint: dtypes as documented, and our writer reproduces it byte for byte',
  { skip: existsSync(GOLDEN_DIR) ? false : `golden folder absent: ${GOLDEN_DIR}` },
  (t) => {
    const ck = Checkpoint.open(GOLDEN_DIR);
    t.after(() => ck.close());
    const q = ck.entry('model.layers.0.self_attn.q_a_proj.weight');
    assert.equal(q.dtype, 'F8_E4M3');
    assert.deepEqual(q.shape, [192, 256]);
    const s = ck.read('model.layers.0.self_attn.q_a_proj.weight_scale_inv');
    assert.equal(s.dtype, 'F32');
    assert.deepEqual(s.shape, [2, 2]);
    assert.ok(new Float32Array(s.data.buffer).every((v) => Number.isFinite(v) && v > 0));
    const emb = ck.read('model.embed_tokens.weight');
    assert.equal(emb.dtype, 'BF16');
    assert.deepEqual(emb.shape, [512, 256]);
    assert.equal(emb.data.byteLength, 512 * 256 * 2);

    const out = join(tmp(t), 'model.safetensors');
    const specs = ck.names().map((name) => {
      const e = ck.entry(name);
      return { name, dtype: e.dtype as DType, shape: e.shape };
    });
    writeSafetensors(out, specs, (name) => ck.read(name).data);
    assert.ok(readFileSync(out).equals(readFileSync(join(GOLDEN_DIR, 'model.safetensors'))));
  });

test('missing files: file, folder, empty folder, shard named in the index', (t) => {
  const dir = tmp(t);
  openErr(join(dir, 'no.safetensors'), 'MISSING_FILE', 'no.safetensors');
  expectDsError(() => Checkpoint.open(join(dir, 'nodir')), 'MISSING_FILE', 'nodir');
  ckErr(dir, 'MISSING_FILE', dir);
  const scalar: TensorSpec[] = [{ name: 'a', dtype: 'F32', shape: [] }];
  writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), scalar, () => bytes(4, 0));
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({
    metadata: { total_size: 8 },
    weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
  }));
  ckErr(dir, 'MISSING_FILE', 'model-00002-of-00002.safetensors', '"b"');
});

test('file shorter than 8 bytes', (t) => {
  const path = join(tmp(t), 'short.safetensors');
  writeFileSync(path, Buffer.from([1, 2, 3]));
  openErr(path, 'BAD_SAFETENSORS', 'short.safetensors', '3 bytes');
});

test('header length past the end of the file', (t) => {
  const path = join(tmp(t), 'h.safetensors');
  rawFile(path, twoTensors(), 14, 50_000_000);
  openErr(path, 'BAD_SAFETENSORS', 'h.safetensors', 'past the end');
});

test('header length over 100 MB is refused before allocating, even if the file is big', (t) => {
  const path = join(tmp(t), 'huge.safetensors');
  const claimed = 300_000_000;
  rawFile(path, '{}', 0, claimed);
  truncateSync(path, claimed + 1000); // sparse: the claim fits in the file
  const before = process.memoryUsage().arrayBuffers;
  openErr(path, 'BAD_SAFETENSORS', 'huge.safetensors', '100000000');
  assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20, 'no header buffer allocated');
  rawFile(path, '{}', 0, 2 ** 63); // would overflow a double's exact range
  openErr(path, 'BAD_SAFETENSORS', 'huge.safetensors');
});

test('header not JSON, not an object, not UTF-8, bad __metadata__', (t) => {
  const dir = tmp(t);
  const p = join(dir, 'j.safetensors');
  rawFile(p, '{"a": {"dtype": "F32",');
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', 'not valid JSON');
  rawFile(p, '[1, 2]');
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', 'not a JSON object');
  rawFile(p, 'null');
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', 'not a JSON object');
  const notUtf8 = [0x7b, 0xff, 0xfe, 0x7d];
  writeFileSync(p, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(notUtf8)]));
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', 'UTF-8');
  rawFile(p, { __metadata__: { format: 1 } });
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', '"format"');
  rawFile(p, { __metadata__: ['pt'] });
  openErr(p, 'BAD_SAFETENSORS', 'j.safetensors', '__metadata__');
});

test('entries missing a field or with fields of the wrong type', (t) => {
  const p = join(tmp(t), 'e.safetensors');
  const cases: [unknown, string][] = [
    [{ shape: [2], data_offsets: [0, 8] }, '"dtype"'],
    [{ dtype: 'F32', data_offsets: [0, 8] }, '"shape"'],
    [{ dtype: 'F32', shape: [2] }, '"data_offsets"'],
    [{ dtype: 32, shape: [2], data_offsets: [0, 8] }, '"dtype"'],
    [{ dtype: 'F32', shape: 2, data_offsets: [0, 8] }, '"shape"'],
    [{ dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] }, '"shape"'],
    [{ dtype: 'F32', shape: [2.5], data_offsets: [0, 8] }, '"shape"'],
    [{ dtype: 'F32', shape: [2], data_offsets: [0, 4, 8] }, '"data_offsets"'],
    [{ dtype: 'F32', shape: [2], data_offsets: ['0', '8'] }, '"data_offsets"'],
    [{ dtype: 'F32', shape: [2], data_offsets: [8, 0] }, 'end before'],
    ['F32', 'not an object'],
    [{ dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] }, 'too large'],
  ];
  for (const [entry, what] of cases) {
    rawFile(p, { 'model.norm.weight': entry }, 8);
    openErr(p, 'BAD_SAFETENSORS', 'e.safetensors', '"model.norm.weight"', what);
  }
});

test('unknown dtype tag: BAD_SAFETENSORS; safetensors dtype dsv3 cannot use: BAD_DTYPE', (t) => {
  const dir = tmp(t);
  const p = join(dir, 'model.safetensors');
  rawFile(p, { t: { dtype: 'F7', shape: [2], data_offsets: [0, 2] } }, 2);
  openErr(p, 'BAD_SAFETENSORS', 'model.safetensors', '"t"', 'F7');
  rawFile(p, { t: { dtype: 'toString', shape: [2], data_offsets: [0, 2] } }, 2);
  openErr(p, 'BAD_SAFETENSORS', 'toString');
  rawFile(p, {
    ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
    nib: { dtype: 'F4', shape: [4], data_offsets: [16, 18] },
    w: { dtype: 'F32', shape: [1], data_offsets: [18, 22] },
  }, 22);
  const f = SafetensorsFile.open(p);
  assert.equal(f.entries.get('ids')!.dtype, 'I64');
  assert.equal(f.entries.get('nib')!.byteLength, 2);
  expectDsError(() => f.read('ids'), 'BAD_DTYPE', 'model.safetensors', '"ids"', 'I64');
  assert.equal(f.read('w').data.byteLength, 4);
  f.close();
  const ck = Checkpoint.open(dir);
  expectDsError(() => ck.read('ids'), 'BAD_DTYPE', '"ids"');
  ck.close();
  rawFile(p, { nib: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } }, 2);
  openErr(p, 'BAD_SAFETENSORS', '"nib"', 'whole byte');
});

test('byte length that disagrees with shape and dtype', (t) => {
  const p = join(tmp(t), 'len.safetensors');
  rawFile(p, { 'model.layers.0.w': { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 8] } }, 8);
  openErr(p, 'BAD_SAFETENSORS', 'len.safetensors', '"model.layers.0.w"', 'needs 12');
});

test('truncated data section: offsets past its end', (t) => {
  const dir = tmp(t);
  const p = join(dir, 'model-00002-of-00003.safetensors');
  writeSafetensors(p, [
    { name: 'model.layers.3.mlp.gate.weight', dtype: 'BF16', shape: [4, 4] },
    { name: 'a', dtype: 'F32', shape: [4] },
  ], (name) => bytes(name === 'a' ? 16 : 32, 0));
  truncateSync(p, readFileSync(p).byteLength - 5);
  const e = openErr(p, 'BAD_SAFETENSORS', 'model-00002-of-00003.safetensors',
    '"model.layers.3.mlp.gate.weight"', 'data_offsets [16, 48]', 'truncated');
  assert.match(e.message, /extend past the end of the data section/);
});

test('overlapping tensors, holes and trailing bytes', (t) => {
  const p = join(tmp(t), 'o.safetensors');
  rawFile(p, {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
  }, 8);
  openErr(p, 'BAD_SAFETENSORS', 'o.safetensors', 'overlap', '"a"', '"b"');
  rawFile(p, {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
  }, 8);
  openErr(p, 'BAD_SAFETENSORS', 'overlap', '"z"');
  rawFile(p, {
    a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
    b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
  }, 12);
  openErr(p, 'BAD_SAFETENSORS', 'o.safetensors', '"b"', '[4, 8)');
  rawFile(p, { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8);
  openErr(p, 'BAD_SAFETENSORS', '"a"', '[0, 4)');
  rawFile(p, twoTensors(), 20);
  openErr(p, 'BAD_SAFETENSORS', 'o.safetensors', '6 trailing bytes');
  rawFile(p, {}, 3);
  openErr(p, 'BAD_SAFETENSORS', '3 trailing bytes');
  // Zero-size tensors at a boundary, and header padding with spaces, are fine.
  rawFile(p, { ...twoTensors(), e: { dtype: 'F16', shape: [0, 9], data_offsets: [8, 8] } }, 14);
  const ok3 = SafetensorsFile.open(p);
  assert.equal(ok3.entries.size, 3);
  ok3.close();
  rawFile(p, JSON.stringify(twoTensors()) + '      ', 14);
  const ok2 = SafetensorsFile.open(p);
  assert.equal(ok2.entries.size, 2);
  ok2.close();
});

test('bad index: not JSON, no weight_map, bad entry, tensor not in its shard, twice', (t) => {
  const dir = tmp(t);
  const idx = join(dir, 'model.safetensors.index.json');
  const s1 = 'model-00001-of-00002.safetensors';
  const s2 = 'model-00002-of-00002.safetensors';
  writeSafetensors(join(dir, s1), [{ name: 'a', dtype: 'F32', shape: [1] }], () => bytes(4, 0));
  writeSafetensors(join(dir, s2), [
    { name: 'b', dtype: 'F32', shape: [1] },
    { name: 'a', dtype: 'F32', shape: [1] },
  ], () => bytes(4, 0));
  writeFileSync(idx, '{"weight_map": {"a": ');
  ckErr(dir, 'BAD_SAFETENSORS', 'model.safetensors.index.json', 'JSON');
  writeFileSync(idx, JSON.stringify({ metadata: { total_size: 4 } }));
  ckErr(dir, 'BAD_SAFETENSORS', 'model.safetensors.index.json', 'weight_map');
  writeFileSync(idx, JSON.stringify({ weight_map: { a: 7 } }));
  ckErr(dir, 'BAD_SAFETENSORS', 'model.safetensors.index.json', '"a"');
  writeFileSync(idx, JSON.stringify({ weight_map: { a: '../x/model.safetensors' } }));
  ckErr(dir, 'BAD_SAFETENSORS', 'leaves the folder');
  writeFileSync(idx, JSON.stringify({ weight_map: { a: s1, c: s1 } }));
  ckErr(dir, 'MISSING_TENSOR', '"c"', s1, 'model.safetensors.index.json');
  writeFileSync(idx, JSON.stringify({ weight_map: { a: s1, b: s2 } }));
  ckErr(dir, 'BAD_SAFETENSORS', '"a"', s1, s2, 'twice');
  // A bad shard header is reported with the shard's name.
  writeSafetensors(join(dir, s2), [{ name: 'b', dtype: 'F32', shape: [1] }], () => bytes(4, 0));
  truncateSync(join(dir, s2), 12);
  ckErr(dir, 'BAD_SAFETENSORS', s2);
});

test('writer rejects bad specs and wrong-sized data, leaving no file behind', (t) => {
  const dir = tmp(t);
  const p = join(dir, 'w.safetensors');
  const a2: TensorSpec[] = [{ name: 'a', dtype: 'F32', shape: [2] }];
  expectDsError(() => writeSafetensors(p, a2, () => bytes(7, 0)), 'BAD_INPUT', '"a"', 'needs 8');
  assert.deepEqual(readdirSync(dir), []);
  const dup: TensorSpec[] = [
    { name: 'a', dtype: 'F32', shape: [] },
    { name: 'a', dtype: 'F16', shape: [] },
  ];
  expectDsError(() => writeSafetensors(p, dup, () => bytes(4, 0)), 'BAD_INPUT', '"a"', 'twice');
  expectDsError(() => writeSafetensors(p, [{ name: 'a', dtype: 'I64' as DType, shape: [] }],
    () => bytes(8, 0)), 'BAD_INPUT', 'I64');
  const neg: TensorSpec[] = [{ name: 'a', dtype: 'F32', shape: [-1] }];
  expectDsError(() => writeSafetensors(p, neg, () => bytes(0, 0)), 'BAD_INPUT', 'shape');
  expectDsError(() => writeCheckpoint(join(dir, 'ck'), [], () => bytes(0, 0), { maxShardBytes: 0 }),
    'BAD_INPUT', 'maxShardBytes');
  assert.deepEqual(readdirSync(dir), []);
});

test('every truncation and single-byte header corruption: a DsError or a valid file', (t) => {
  const dir = tmp(t);
  const good = join(dir, 'good.safetensors');
  writeSafetensors(good, [
    { name: 'a', dtype: 'F32', shape: [2, 2] },
    { name: 'b', dtype: 'F8_E4M3', shape: [3] },
  ], (name) => bytes(name === 'a' ? 16 : 3, 1));
  const src = readFileSync(good);
  const p = join(dir, 'bad.safetensors');
  const attempt = (buf: Buffer) => {
    writeFileSync(p, buf);
    try {
      const f = SafetensorsFile.open(p);
      for (const name of f.entries.keys()) {
        try { f.read(name); } catch (e) { if (!(e instanceof DsError)) throw e; }
      }
      f.close();
    } catch (e) {
      if (!(e instanceof DsError)) throw e;
      assert.ok(e.message.includes('bad.safetensors'), e.message);
    }
  };
  for (let len = 0; len < src.byteLength; len++) attempt(src.subarray(0, len));
  const n = Number(src.readBigUInt64LE(0));
  for (let i = 0; i < 8 + n; i++) {
    for (const v of [0x00, 0x22, 0x2c, 0x31, 0x39, 0x7d, 0xff]) {
      const b = Buffer.from(src);
      b[i] = v;
      attempt(b);
    }
  }
  mkdirSync(join(dir, 'sub.safetensors'));
  openErr(join(dir, 'sub.safetensors'), 'BAD_SAFETENSORS', 'sub.safetensors');
});
