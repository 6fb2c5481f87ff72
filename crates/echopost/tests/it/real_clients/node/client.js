#!/usr/bin/env node
// A stock @grpc/grpc-js client of the daemon, for crates/echopost/tests/it/real_clients/node.rs.
//
//     node client.js --target unix:/abs/echopost.sock --proto-root DIR --tag TAG
//
// Loads proto/echopost/v1/echopost.proto at run time with @grpc/proto-loader, makes a
// client with insecure credentials and no channel options, and calls `Append` (the two
// records `records(TAG)` describes) and then `Status`. It checks nothing itself: it prints
// one line `RESULT <json>` with what the calls returned and the Rust test asserts on it.
// A failed call ends the program with status 1.
//
// Its packages come from package-lock.json beside it: scripts/test runs `npm ci` here.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: node client.js --target TARGET --proto-root DIR --tag TAG (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

// The records appended: a JSON body with a header, and raw bytes.
function records(tag) {
  return [
    {
      id: `${tag}-1`,
      stream: tag,
      payload: Buffer.from('{"event": "signup", "user": 7}'),
      headers: { "content-type": "application/json", "x-client": "grpc-js" },
      route: "POST /events",
    },
    { id: `${tag}-2`, stream: tag, payload: Buffer.from([0, 1, 2, 255]), route: "PUT /raw" },
  ];
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30_000);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const target = arg("--target");
  const protoRoot = arg("--proto-root");
  const tag = arg("--tag");
  const definition = protoLoader.loadSync(path.join(protoRoot, "echopost/v1/echopost.proto"), {
    includeDirs: [protoRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition);
  const version = require("@grpc/grpc-js/package.json").version;
  console.log(`@grpc/grpc-js ${version}: new EchoPost(${JSON.stringify(target)}, insecure), no options`);
  const client = new pkg.echopost.v1.EchoPost(target, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) =>
    client.waitForReady(new Date(Date.now() + 20_000), (err) => (err ? reject(err) : resolve())),
  );

  const ack = await call(client, "Append", { records: records(tag) });
  console.log(`Append: sequences ${ack.first_sequence}..${ack.last_sequence}`);
  const status = await call(client, "Status", {});
  console.log(`Status: next_sequence ${status.next_sequence}, backlog ${status.backlog_records} records`);
  client.close();

  const result = {
    grpc_js: version,
    append: { first_sequence: Number(ack.first_sequence), last_sequence: Number(ack.last_sequence) },
    status: {
      first_sequence: Number(status.first_sequence),
      next_sequence: Number(status.next_sequence),
      backlog_records: Number(status.backlog_records),
      backlog_bytes: Number(status.backlog_bytes),
      pid: status.pid,
      version: status.version,
      dir: status.dir,
      session_id: status.session_id,
      upstream_state: status.upstream_state,
    },
  };
  console.log("RESULT " + JSON.stringify(result));
}

main().catch((err) => {
  console.error(`failed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
