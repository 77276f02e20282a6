// The AWS SDK for JavaScript v3's IMDS client (@aws-sdk/ec2-metadata-service) asking for the
// instance id, as an application would: a token PUT first (1 s timeout), then the GET.
// Usage: node js_sdk_client.mjs NODE_PREFIX  (where `npm install --prefix` put the package)
// Prints {"instance_id": ...} or {"error": ...}; never the token.
import { createRequire } from "node:module";

const require = createRequire(`${process.argv[2]}/package.json`);
const { MetadataService } = require("@aws-sdk/ec2-metadata-service");

const service = new MetadataService({
  endpoint: "http://169.254.169.254",
  httpOptions: { timeout: 1000 },
  retries: 0,
});
try {
  const id = await service.request("latest/meta-data/instance-id", {});
  console.log(JSON.stringify({ instance_id: id }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message).slice(0, 200) }));
  process.exitCode = 1;
}
