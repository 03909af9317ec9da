// The dsv3 command as the tests run it: bin/dsv3.js on the TypeScript sources, never a dist/
// older than them. Importing this sets DSV3_FROM_SOURCE=1 in this process, so every dsv3
// process a test starts inherits it (scripts/run-tests.mjs sets it for `npm test` as well).

import { join } from 'node:path';
import { REPO_ROOT } from './golden.ts';

process.env.DSV3_FROM_SOURCE = '1';

/** bin/dsv3.js, to run with process.execPath. */
export const DSV3_BIN = join(REPO_ROOT, 'bin/dsv3.js');
