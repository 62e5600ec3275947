// Drives an MCP server over stdio with the official TypeScript SDK client, as a strict
// third-party client would (tests/test_mcp_typescript.py runs it through tests/typescript_mcp.py).
//
//   node client.mjs plan.json
//
// plan.json:
//   {"command": str, "args": [str], "env": {str: str}, "cwd": str?,
//    "request_timeout_ms": int?,            // per request, the SDK's default is 60000
//    "calls": [{"tool": str, "arguments": {...}}]}
// An argument value {"$ref": "<i>.<path>"} is replaced by a value of the i-th (0-based) call's
// entry in "results", e.g. {"$ref": "6.structuredContent.regions.0.region_id"}: a later call
// can use an id that an earlier call returned. A $ref that resolves to nothing skips its call,
// whose entry then has "plan_error" set.
//
// Connects (initialize), lists the tools, then calls each tool in order with the SDK's own
// Client.callTool, which validates structuredContent against the tool's outputSchema. Prints
// ONE JSON document on stdout:
//   {"tools": [{"name", "inputSchema", "outputSchema"}],
//    "results": [{"tool", "ok", "isError", "content", "structuredContent", "sdk_error"}],
//    "server": {"name", "version"} | null, "protocol_version": str | null}
// `ok` is true when callTool returned (no sdk_error) a result whose isError is not true.
// `sdk_error` is {"code", "message"} when callTool threw (e.g. McpError -32602 "Structured
// content does not match the tool's output schema"); the fields isError/content/
// structuredContent then still show what the server sent, when a response arrived.
// The server's stderr goes to this process's stderr. Exit code: 0 whenever every call was
// made (whatever the calls answered); 2 on a harness failure (bad plan, cannot connect or
// list the tools).

import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const SDK = '@modelcontextprotocol/sdk';

/**
 * `import('@modelcontextprotocol/sdk/<subpath>')`. ES modules resolve bare names only from
 * node_modules beside or above this file, never through NODE_PATH; the harness installs the
 * SDK in a cache directory instead, so the package is also looked for in each NODE_PATH entry
 * and in ./node_modules, and its ESM entry is read from its package.json "exports".
 */
async function importSdk(subpath) {
  try {
    return await import(`${SDK}/${subpath}`);
  } catch (error) {
    if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !String(error.message).includes(`'${SDK}'`)) {
      throw error;
    }
  }
  const roots = [
    ...(process.env.NODE_PATH ?? '').split(delimiter).filter(Boolean),
    join(process.cwd(), 'node_modules'),
  ];
  for (const root of roots) {
    const dir = join(resolve(root), ...SDK.split('/'));
    if (!existsSync(join(dir, 'package.json'))) {
      continue;
    }
    const pattern = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).exports?.['./*'];
    const target = (typeof pattern === 'string' ? pattern : pattern?.import)?.replace('*', subpath);
    if (target) {
      return import(pathToFileURL(resolve(dir, target)).href);
    }
  }
  throw new Error(`${SDK} not found (NODE_PATH=${process.env.NODE_PATH ?? ''}, cwd=${process.cwd()})`);
}

const { Client } = await importSdk('client/index.js');
const { StdioClientTransport } = await importSdk('client/stdio.js');

/** A Client that remembers the raw result of its last tools/call (before callTool's checks)
 * and the protocol version the server chose. */
class RecordingClient extends Client {
  lastToolResult = undefined;
  protocolVersion = null;

  async request(request, resultSchema, options) {
    const result = await super.request(request, resultSchema, options);
    if (request?.method === 'tools/call') {
      this.lastToolResult = result;
    } else if (request?.method === 'initialize') {
      this.protocolVersion = result?.protocolVersion ?? null;
    }
    return result;
  }
}

function fail(message, error) {
  const detail = error ? `: ${error?.stack ?? error}` : '';
  process.stderr.write(`mcp_ts client: ${message}${detail}\n`);
  process.exit(2);
}

/** `value` with each {"$ref": "i.path"} replaced by what it points at in `results`. */
function resolveRefs(value, results) {
  if (Array.isArray(value)) {
    return value.map((v) => resolveRefs(v, results));
  }
  if (value === null || typeof value !== 'object') {
    return value;
  }
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === '$ref' && typeof value.$ref === 'string') {
    let target = results;
    for (const part of value.$ref.split('.')) {
      target = target?.[/^\d+$/.test(part) ? Number(part) : part];
    }
    if (target === undefined || target === null) {
      throw new Error(`$ref ${value.$ref} points at nothing`);
    }
    return target;
  }
  return Object.fromEntries(keys.map((k) => [k, resolveRefs(value[k], results)]));
}

function errorInfo(error) {
  const code = typeof error?.code === 'number' ? error.code : null;
  return { code, message: String(error?.message ?? error) };
}

async function main() {
  const planPath = process.argv[2];
  if (!planPath) {
    fail('usage: node client.mjs plan.json');
  }
  let plan;
  try {
    plan = JSON.parse(readFileSync(planPath, 'utf8'));
  } catch (error) {
    fail(`cannot read the plan ${planPath}`, error);
  }
  if (typeof plan?.command !== 'string' || !Array.isArray(plan.calls ?? [])) {
    fail('the plan needs "command" (string) and "calls" (array)');
  }
  const requestOptions =
    typeof plan.request_timeout_ms === 'number' ? { timeout: plan.request_timeout_ms } : undefined;

  const transport = new StdioClientTransport({
    command: plan.command,
    args: plan.args ?? [],
    env: plan.env ?? undefined,
    cwd: plan.cwd ?? undefined,
    stderr: 'inherit',
  });
  const client = new RecordingClient({ name: 'hirag-oz-ts-harness', version: '0.0.0' });

  try {
    await client.connect(transport, requestOptions);
  } catch (error) {
    await client.close().catch(() => {});
    fail(`cannot connect to ${plan.command}`, error);
  }

  let tools;
  try {
    // Also compiles and caches each tool's outputSchema validator, used by callTool.
    tools = (await client.listTools(undefined, requestOptions)).tools;
  } catch (error) {
    await client.close().catch(() => {});
    fail('tools/list failed', error);
  }

  const results = [];
  for (const call of plan.calls ?? []) {
    client.lastToolResult = undefined;
    const entry = {
      tool: call.tool,
      ok: false,
      isError: null,
      content: null,
      structuredContent: null,
      sdk_error: null,
    };
    let args;
    try {
      args = resolveRefs(call.arguments ?? {}, results);
    } catch (error) {
      results.push({ ...entry, plan_error: String(error?.message ?? error) });
      continue;
    }
    try {
      const result = await client.callTool(
        { name: call.tool, arguments: args },
        undefined,
        requestOptions,
      );
      entry.isError = result.isError ?? false;
      entry.content = result.content ?? null;
      entry.structuredContent = result.structuredContent ?? null;
      entry.ok = entry.isError !== true;
    } catch (error) {
      entry.sdk_error = errorInfo(error);
      const raw = client.lastToolResult;
      if (raw !== undefined) {
        entry.isError = raw.isError ?? false;
        entry.content = raw.content ?? null;
        entry.structuredContent = raw.structuredContent ?? null;
      }
    }
    results.push(entry);
  }

  const document = {
    tools: tools.map((t) => ({
      name: t.name,
      inputSchema: t.inputSchema ?? null,
      outputSchema: t.outputSchema ?? null,
    })),
    results,
    server: client.getServerVersion() ?? null,
    protocol_version: client.protocolVersion,
  };
  await client.close().catch(() => {});
  process.stdout.write(`${JSON.stringify(document)}\n`);
}

main().catch((error) => fail('unexpected failure', error));
