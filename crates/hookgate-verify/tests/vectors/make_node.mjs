// Makes node.json: GitHub signatures computed by GitHub's own library.
//   npm install @octokit/webhooks-methods && node make_node.mjs > node.json
import { sign, verify } from "@octokit/webhooks-methods";
import { readFileSync } from "node:fs";

const version = JSON.parse(readFileSync("node_modules/@octokit/webhooks-methods/package.json", "utf8")).version;
const vectors = [];
for (const [secret, body] of [
  ["It's a Secret to Everybody", "Hello, World!"],
  ["github_vector_secret", '{"action":"opened","number":7,"pull_request":{"id":1}}'],
]) {
  const signature = await sign(secret, body);
  if (!(await verify(secret, body, signature))) throw new Error("does not verify");
  vectors.push({
    scheme: "github",
    made_with: `@octokit/webhooks-methods ${version}`,
    secret,
    headers: { "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958" },
    body,
    now: 0,
  });
}
console.log(JSON.stringify(vectors, null, 2));
