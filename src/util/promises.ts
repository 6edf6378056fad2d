/** Promise helpers. */

/**
 * Like Promise.all, but waits for every promise to settle before it throws
 * the first failure (in argument order): when one step fails, none of its
 * siblings is still writing files or running a tool.
 */
export async function allSettledOrThrow<T extends readonly unknown[]>(promises: {
  readonly [K in keyof T]: Promise<T[K]>;
}): Promise<T> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
