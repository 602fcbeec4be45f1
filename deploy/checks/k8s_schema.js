#!/usr/bin/env node
// Validates deploy/k8s/*.yaml offline against the Kubernetes OpenAPI schemas bundled in
// the npm package kubernetes-models (version pinned in deploy/package-lock.json; its
// schemas are those of Kubernetes 1.27, the JSON-schema validators are generated from
// the upstream OpenAPI spec and compiled with ajv).
//
// Two checks per manifest file, one output line each (PASS/FAIL, counted by check.sh):
//   schema  — model.validate(): required fields, types, enums, formats, as the API
//             server's OpenAPI validation would (like `kubeconform`).
//   strict  — no field the schema does not know. Kubernetes' OpenAPI has no
//             additionalProperties:false, so a misspelt key (`readinesProbe`) passes
//             `schema` and is silently dropped by the API server; `kubeconform -strict`
//             catches it, and so does this: the property names of every type are read
//             from the package's TypeScript declarations (.d.ts), which are generated
//             from the same OpenAPI spec, and the manifest is walked against them.
//
// Usage: node k8s_schema.js DIR_WITH_MANIFESTS   (run from deploy/, where node_modules is)
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const dir = process.argv[2];
if (!dir) {
  console.error("usage: k8s_schema.js DIR");
  process.exit(2);
}

// apiVersion/kind -> module path in kubernetes-models.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const sub = group ? `${group}/${version}` : version;
  try {
    const mod = require(`kubernetes-models/${sub}/${kind}`);
    return { Model: mod[kind], dts: require.resolve(`kubernetes-models/${sub}/${kind}`).replace(/\.js$/, ".d.ts") };
  } catch (e) {
    return null;
  }
}

// ---- strict field check from the .d.ts declarations --------------------------------
// Every generated declaration file holds `export interface IName { "prop"?: Type; ... }`
// and `export { IName as IIoK8s...Alias, ... }`. Types of properties are either another
// interface alias, Array<...>, a map `{ [key: string]: ... }`, or a leaf.
const ifaceByAlias = new Map(); // alias or local name (per file) -> {props}
const parsedFiles = new Set();

function parseDts(file) {
  if (parsedFiles.has(file) || !fs.existsSync(file)) return;
  parsedFiles.add(file);
  const src = fs.readFileSync(file, "utf8").replace(/\/\*\*[\s\S]*?\*\//g, "");
  const local = new Map();
  const re = /export interface (\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)\n\}/g;
  let m;
  while ((m = re.exec(src))) {
    const props = new Map();
    // top-level members are indented by exactly 4 spaces
    const body = m[2];
    const memberRe = /^ {4}"([^"]+)"\??: ([\s\S]*?);$(?=\n {4}"|\n?$)/gm;
    let mm;
    while ((mm = memberRe.exec(body))) props.set(mm[1], mm[2].replace(/\s+/g, " ").trim());
    local.set(m[1], { props });
  }
  const ex = /export \{([^}]*)\}/g;
  while ((m = ex.exec(src))) {
    for (const part of m[1].split(",")) {
      const [a, b] = part.trim().split(/\s+as\s+/);
      if (local.has(a)) ifaceByAlias.set(b, local.get(a));
    }
  }
  for (const [name, v] of local) ifaceByAlias.set(`${file}#${name}`, v);
  // follow imports so referenced types are known
  const imp = /import \{([^}]*)\} from "([^"]+)";/g;
  while ((m = imp.exec(src))) {
    const spec = m[2];
    if (spec === "@kubernetes-models/base") continue;
    let target;
    try {
      target = spec.startsWith(".")
        ? path.resolve(path.dirname(file), spec + ".d.ts")
        : require.resolve(spec).replace(/\.js$/, ".d.ts");
    } catch (e) {
      continue;
    }
    parseDts(target);
  }
}

function strictWalk(value, type, where, problems) {
  if (value === null || value === undefined || !type) return;
  type = type.trim();
  let m;
  if ((m = /^Array<(.*)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => strictWalk(v, m[1], `${where}[${i}]`, problems));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.*); \}$/.exec(type))) {
    if (typeof value === "object") for (const [k, v] of Object.entries(value)) strictWalk(v, m[1], `${where}.${k}`, problems);
    return;
  }
  const iface = ifaceByAlias.get(type);
  if (!iface || typeof value !== "object" || Array.isArray(value)) return; // leaf type
  for (const [k, v] of Object.entries(value)) {
    if (!iface.props.has(k)) problems.push(`${where}.${k}: unknown field`);
    else strictWalk(v, iface.props.get(k), `${where}.${k}`, problems);
  }
}

// ---- main ---------------------------------------------------------------------------
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort();
let failures = 0;
for (const f of files) {
  const schemaProblems = [];
  const strictProblems = [];
  let docs;
  try {
    docs = YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), "utf8"));
  } catch (e) {
    docs = [];
    schemaProblems.push(`parse: ${e.message}`);
  }
  const kinds = [];
  for (const doc of docs) {
    if (doc.errors && doc.errors.length) {
      schemaProblems.push(`parse: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (!obj) continue;
    kinds.push(`${obj.apiVersion} ${obj.kind}`);
    const model = modelFor(obj.apiVersion || "", obj.kind || "");
    if (!model) {
      schemaProblems.push(`${obj.apiVersion} ${obj.kind}: no such type in Kubernetes 1.27`);
      continue;
    }
    try {
      new model.Model(obj).validate();
    } catch (e) {
      schemaProblems.push(`${obj.kind}: ${String(e.message).split("\n").slice(0, 3).join(" | ")}`);
    }
    parseDts(model.dts);
    const top = [...ifaceByAlias.entries()].find(([k]) => k.startsWith(model.dts + "#I" + obj.kind));
    if (!top) strictProblems.push(`${obj.kind}: declarations not found`);
    else strictWalk(obj, `${model.dts}#I${obj.kind}`, obj.kind, strictProblems);
  }
  const label = `${f} (${kinds.join(", ") || "no object"})`;
  if (!kinds.length && !schemaProblems.length) schemaProblems.push("no object");
  for (const [name, probs] of [["schema", schemaProblems], ["strict (no unknown fields)", strictProblems]]) {
    if (probs.length) {
      failures++;
      console.log(`FAIL k8s ${name}: ${label}: ${probs.join("; ")}`);
    } else {
      console.log(`PASS k8s ${name}: ${label}`);
    }
  }
}
process.exit(0);
