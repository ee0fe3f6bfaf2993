// Runs fsnn's kernels through Tint inside Dawn (the npm `webgpu` package, Dawn's Node bindings):
// compiles every kernel text it is given into a compute pipeline, and runs the given dispatches.
// Driven by tests/portability.rs, which writes the input, judges the output and holds the CPU
// twins; this script only talks to WebGPU.
//
//   node portability.mjs <webgpu package dir> <input.json> <output.json>
//
// Input:  { kernels: [{ name, code, subgroups }],
//           cases:   [{ name, kernel, params: [u32], buffers: [[u32]], groups: [x, y, z] }] }
//           (f32 data travels as its bit patterns, so nothing is rounded on the way)
// Output: { adapter, subgroups_offered, limits, kernels: [{ name, ok, skipped, messages }],
//           cases: [{ name, buffers: [[u32]], error }] }

import { writeFileSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, inputPath, outputPath] = process.argv.slice(2);
if (!pkgDir || !inputPath || !outputPath) {
  console.error('usage: node portability.mjs <webgpu package dir> <input.json> <output.json>');
  process.exit(2);
}
const { create, globals } = await import(pathToFileURL(join(pkgDir, 'index.js')).href);
Object.assign(globalThis, globals);
const input = JSON.parse(readFileSync(inputPath, 'utf8'));

const gpu = create([]);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error('Dawn found no WebGPU adapter (is a Vulkan driver such as lavapipe installed?)');
  process.exit(3);
}
const info = adapter.info || {};
const subgroupsOffered = adapter.features.has('subgroups');
// No requiredLimits: the device has WebGPU's default limits, the ones every WebGPU offers.
const plain = await adapter.requestDevice();
// An adapter makes one device only, so the subgroup device comes from a second one.
const withSubgroups = subgroupsOffered
  ? await (await gpu.requestAdapter()).requestDevice({ requiredFeatures: ['subgroups'] })
  : null;

// Everything a failed compile or pipeline creation reports: the compiler's messages, validation
// and internal errors (Tint's back end and the driver report through the latter).
async function build(device, code, label) {
  const messages = [];
  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label });
  const ci = await module.getCompilationInfo();
  for (const m of ci.messages) {
    if (m.type === 'error') messages.push(`${m.lineNum}:${m.linePos} ${m.message}`);
  }
  let pipeline = null;
  try {
    pipeline = await device.createComputePipelineAsync({
      label,
      layout: 'auto',
      compute: { module, entryPoint: 'main' },
    });
  } catch (e) {
    messages.push(String(e.message || e));
  }
  for (const scope of ['validation', 'internal']) {
    const err = await device.popErrorScope();
    if (err) messages.push(`${scope}: ${err.message}`);
  }
  return { pipeline: messages.length ? null : pipeline, messages };
}

const kernels = [];
const pipelines = new Map();
for (const k of input.kernels) {
  const device = k.subgroups ? withSubgroups : plain;
  if (!device) {
    kernels.push({ name: k.name, ok: false, skipped: true, messages: ['adapter offers no subgroups'] });
    continue;
  }
  const { pipeline, messages } = await build(device, k.code, k.name);
  kernels.push({ name: k.name, ok: messages.length === 0, skipped: false, messages });
  if (pipeline) pipelines.set(k.name, { pipeline, device });
}

async function runCase(c) {
  const entry = pipelines.get(c.kernel);
  if (!entry) throw new Error(`kernel ${c.kernel} did not compile`);
  const { pipeline, device } = entry;
  device.pushErrorScope('validation');
  const params = new Uint32Array(c.params);
  // Uniform buffers are read in 16-byte units.
  const ubuf = device.createBuffer({
    size: Math.max(16, Math.ceil(params.byteLength / 16) * 16),
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(ubuf, 0, params);
  const bufs = c.buffers.map((words) => {
    const data = new Uint32Array(words);
    const b = device.createBuffer({
      size: Math.max(4, data.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(b, 0, data);
    return b;
  });
  const bind = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: ubuf } },
      ...bufs.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
    ],
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(...c.groups);
  pass.end();
  const reads = bufs.map((b) => {
    const r = device.createBuffer({
      size: b.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    enc.copyBufferToBuffer(b, 0, r, 0, b.size);
    return r;
  });
  device.queue.submit([enc.finish()]);
  const err = await device.popErrorScope();
  if (err) throw new Error(`validation: ${err.message}`);
  const out = [];
  for (const [i, r] of reads.entries()) {
    await r.mapAsync(GPUMapMode.READ);
    out.push(Array.from(new Uint32Array(r.getMappedRange().slice(0, c.buffers[i].length * 4))));
    r.unmap();
  }
  return out;
}

const cases = [];
for (const c of input.cases) {
  try {
    cases.push({ name: c.name, buffers: await runCase(c), error: null });
  } catch (e) {
    cases.push({ name: c.name, buffers: [], error: String(e.message || e) });
  }
}

const output = {
  adapter: `${info.vendor || '?'} ${info.architecture || ''} ${info.description || info.device || ''}`.trim(),
  subgroups_offered: subgroupsOffered,
  limits: {
    maxStorageBuffersPerShaderStage: plain.limits.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: plain.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: plain.limits.maxComputeInvocationsPerWorkgroup,
  },
  kernels,
  cases,
};
const tmp = `${outputPath}.tmp`;
writeFileSync(tmp, JSON.stringify(output));
renameSync(tmp, outputPath);
plain.destroy();
withSubgroups?.destroy();
// Dawn's Node bindings can keep the event loop alive after the devices are gone.
process.exit(0);
