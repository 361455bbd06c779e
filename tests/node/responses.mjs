// The official openai Node SDK against a running Switchyard: responses.create and a streamed
// response. Exits non-zero (with the reason) when anything is off.
// Usage: SWITCHYARD_URL=http://127.0.0.1:PORT SWITCHYARD_KEY=... MODEL=... node responses.mjs
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: `${process.env.SWITCHYARD_URL}/v1`,
  apiKey: process.env.SWITCHYARD_KEY,
  maxRetries: 0,
});
const model = process.env.MODEL;

const r = await client.responses.create({ model, input: "Say hello from Node.", max_output_tokens: 32 });
assert.equal(r.object, "response");
assert.ok(r.id.startsWith("resp_"), r.id);
assert.ok(r.output_text.length > 0, JSON.stringify(r));
assert.equal(r.output[0].type, "message");
assert.ok(r.usage.input_tokens > 0);

const got = await client.responses.retrieve(r.id);
assert.equal(got.output_text, r.output_text);

const stream = await client.responses.create({ model, input: "Stream from Node.", stream: true, max_output_tokens: 32 });
const types = [];
let text = "";
let last = -1;
let final;
for await (const ev of stream) {
  types.push(ev.type);
  assert.equal(ev.sequence_number, last + 1, `sequence after ${last}: ${ev.sequence_number}`);
  last = ev.sequence_number;
  if (ev.type === "response.output_text.delta") text += ev.delta;
  if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
}
assert.deepEqual(types.slice(0, 2), ["response.created", "response.in_progress"]);
assert.ok(final, `no final event in ${types.join(",")}`);
assert.equal(final.output_text, text);
console.log(JSON.stringify({ ok: true, events: types.length, text }));
