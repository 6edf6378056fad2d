import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allSettledOrThrow } from '../../src/util/promises.js';

describe('allSettledOrThrow', () => {
  it('resolves with the values in argument order', async () => {
    const slow = new Promise<string>((r) => setTimeout(() => r('slow'), 20));
    const [a, b] = await allSettledOrThrow([slow, Promise.resolve(2)]);
    assert.equal(a, 'slow');
    assert.equal(b, 2);
  });

  it('throws the first failure in argument order, only once every promise has settled', async () => {
    let slowDone = false;
    const slow = new Promise<void>((r) =>
      setTimeout(() => {
        slowDone = true;
        r();
      }, 30),
    );
    await assert.rejects(
      allSettledOrThrow([
        Promise.reject(new Error('first')),
        slow,
        Promise.reject(new Error('second')),
      ]),
      /first/,
    );
    assert.equal(slowDone, true, 'the sibling had finished');
  });
});
