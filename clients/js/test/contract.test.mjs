// The published contract: the AsyncAPI document passes the official parser with no error and
// no warning; the record schemas are valid JSON Schema and every example in the docs
// validates against the schema it illustrates; the generated TypeScript is current.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";

import { generate } from "../scripts/generate.mjs";

const repo = (p) => fileURLToPath(new URL(`../../../${p}`, import.meta.url));
const read = (p) => readFileSync(repo(p), "utf8");
const asyncapi = JSON.parse(read("openapi/asyncapi.json"));

test("the AsyncAPI document passes @asyncapi/parser with no error and no warning", async () => {
  const { document, diagnostics } = await new Parser().parse(read("openapi/asyncapi.json"));
  // Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
  const problems = diagnostics.filter((d) => d.severity <= 1).map((d) => `${d.code} at ${d.path.join(".")}: ${d.message}`);
  assert.deepEqual(problems, []);
  assert.ok(document, "parsed");
  for (const d of diagnostics) console.log(`note: ${d.code}: ${d.message}`);
  assert.equal(document.version(), "3.0.0");
  // The socket side lists every event the bridge sends and every client event.
  const names = document.allMessages().all().map((m) => m.name());
  for (const event of ["order:created", "admin:order:{action}", "inventory:updated", "product:updated", "notification", "connection:success", "sync:position", "session:closing", "auth:expired", "subscribe:products", "auth:refresh", "inventory.updated", "dead letter"]) {
    assert.ok(names.includes(event), `${event} is described`);
  }
});

/** `<!-- validates: <schema> -->` followed by a ```json block, in a docs page. */
function examples(page) {
  const text = read(page);
  const blocks = [...text.matchAll(/(?:<!-- validates: (\S+) -->\n)?```json\n([\s\S]*?)```/g)];
  return blocks.map(([, schema, json]) => ({ page, schema, json: JSON.parse(json) }));
}

const ajv = new Ajv({ allErrors: true, allowUnionTypes: true });
const recordSchemas = Object.fromEntries(
  readdirSync(repo("schemas")).map((file) => [file.replace(/\.json$/, ""), JSON.parse(read(`schemas/${file}`))]),
);
// The socket side's schemas: AsyncAPI components, reachable by their JSON pointers.
ajv.addKeyword("components"); // where AsyncAPI keeps them: a container, not a constraint
ajv.addSchema({ components: { schemas: asyncapi.components.schemas } }, "asyncapi");
const validator = (name) => recordSchemas[name] ? ajv.compile(recordSchemas[name]) : ajv.getSchema(`asyncapi#/components/schemas/${name}`);

test("every record schema is valid JSON Schema (draft 7) and each consumed topic has one", () => {
  assert.deepEqual(Object.keys(recordSchemas).sort(), ["inventory.updated", "order.cancelled", "order.created", "order.updated", "product.created", "product.updated"]);
  for (const [topic, schema] of Object.entries(recordSchemas)) {
    assert.ok(ajv.validateSchema(schema), `${topic}: ${ajv.errorsText()}`);
    assert.equal(schema.$schema, "http://json-schema.org/draft-07/schema#");
    const component = asyncapi.components.schemas[`${topic.split(".").map((w) => w[0].toUpperCase() + w.slice(1)).join("")}Record`];
    assert.ok(component, `${topic} is in the AsyncAPI document`);
    for (const key of ["properties", "required", "oneOf"]) assert.deepEqual(schema[key], component[key], `${topic}: ${key} as in the AsyncAPI document`);
  }
});

test("every JSON example in the docs validates against the schema it illustrates", () => {
  const all = ["docs/producers.md", "docs/client-protocol.md"].flatMap(examples);
  assert.ok(all.length >= 5, `found ${all.length} examples`);
  for (const { page, schema, json } of all) {
    assert.ok(schema, `${page}: a JSON example without <!-- validates: <schema> -->: ${JSON.stringify(json).slice(0, 80)}`);
    const validate = validator(schema);
    assert.ok(validate, `${page}: no schema ${schema}`);
    assert.ok(validate(json), `${page}: example for ${schema} is invalid: ${ajv.errorsText(validate.errors)}`);
  }
});

test("the record schemas refuse what the bridge dead-letters", () => {
  const order = validator("order.updated");
  assert.ok(order({ orderId: 7, userId: "u", status: "paid" }), "integer id, userId for buyerId");
  assert.ok(!order({ orderId: "1", buyerId: "u" }), "status missing");
  assert.ok(!order({ orderId: "1", buyerId: "u", userId: "v", status: "paid" }), "both buyerId and userId");
  assert.ok(!order({ orderId: "  ", buyerId: "u", status: "paid" }), "blank id");
  assert.ok(validator("order.cancelled")({ orderId: "1", buyerId: "u" }), "status defaults on order.cancelled");
  assert.ok(!validator("inventory.updated")({ productId: "p", stock: 1.5 }), "stock is whole");
  assert.ok(!validator("product.created")({ productId: "p" }), "name required on product.created");
  assert.ok(validator("product.updated")({ productId: "p" }));
  assert.ok(!validator("order.updated")([1, 2]), "an object");
});

test("the generated TypeScript is current (scripts/generate.sh regenerates it)", async () => {
  for (const [path, text] of Object.entries(await generate())) {
    assert.equal(readFileSync(fileURLToPath(new URL(`../${path}`, import.meta.url)), "utf8"), text, `${path} is stale`);
  }
});
