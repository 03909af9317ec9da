import { it } from 'node:test';
import assert from 'node:assert/strict';
import { lossCurveSvg } from './plot.ts';

it('draws one polyline per series with every finite point, escaping names', () => {
  const svg = lossCurveSvg(
    [
      { name: 'train <fp32>', points: [[0, 5], [1, 4], [2, 3.5], [3, NaN]] },
      { name: 'val', points: [[0, 5.2], [2, 3.9]] },
    ],
    { title: 'loss', yLabel: 'cross-entropy' },
  );
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  const lines = [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1].split(' ').length);
  assert.deepEqual(lines, [3, 2]);
  assert.match(svg, /train &lt;fp32&gt;/);
  assert.doesNotMatch(svg, /NaN/);
});
