// A node:test reporter that writes one JSON line per skipped test (file,
// name, reason). scripts/test.sh reads them: under CI every skip must name
// a host capability CI lacks ("host capability: ..."), or the run fails,
// so that no test silently stops running.
export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { skip, name, file } = event.data;
    if (skip === undefined || skip === false) continue;
    yield JSON.stringify({ file, name, reason: skip === true ? '' : String(skip) }) + '\n';
  }
}
