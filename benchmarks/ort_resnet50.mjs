// ONNX Runtime side of bench_resnet50's eval cases, run by benchmarks/ort_resnet50.sh (which
// exports the models and installs onnxruntime-node; see its --help).
// Usage: node ort_resnet50.mjs --ort-dir DIR --models DIR [--dynamic] [--min-time S] CASE...
// Prints `case  ms/iter  images/s (n iterations)` in torch_resnet50.py's exact format.
import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const EVAL_CASES = ['eval/224/16', 'eval/64/64', 'eval/32/64'];

function die(msg) {
  process.stderr.write(`ort_resnet50.mjs: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = { ortDir: null, models: null, dynamic: false, minTime: 2.0, cases: [] };
  for (let i = 0; i < argv.length; ++i) {
    const v = argv[i];
    const need = () => {
      if (i + 1 >= argv.length) die(`${v} needs a value`);
      return argv[++i];
    };
    if (v === '--ort-dir') a.ortDir = need();
    else if (v === '--models') a.models = need();
    else if (v === '--dynamic') a.dynamic = true;
    else if (v === '--min-time') {
      a.minTime = Number(need());
      if (!(a.minTime >= 0)) die(`--min-time must be a non-negative number of seconds`);
    } else if (v.startsWith('-')) die(`unknown option ${v}`);
    else a.cases.push(v);
  }
  if (!a.ortDir || !a.models) die('--ort-dir and --models are required');
  if (a.cases.length === 0) a.cases = EVAL_CASES;
  for (const c of a.cases)
    if (!EVAL_CASES.includes(c)) die(`unknown case ${c} (ONNX Runtime runs only ${EVAL_CASES.join(' ')})`);
  return a;
}

// Same file names as ort_resnet50.sh writes.
function modelPath(dir, dynamic, size, batch) {
  return path.join(dir, dynamic ? 'resnet50_dynamic.onnx' : `resnet50_s${size}_b${batch}.onnx`);
}

// Input values only need to be finite and image-like; a fixed LCG keeps runs identical.
function fillInput(n) {
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; ++i) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s >>> 8) / 8388608 - 1;  // [-1, 1)
  }
  return data;
}

async function runCase(ort, args, c) {
  const [, sizeS, batchS] = c.split('/');
  const size = Number(sizeS), batch = Number(batchS);
  const file = modelPath(args.models, args.dynamic, size, batch);
  if (!fs.existsSync(file)) die(`model ${file} missing (ort_resnet50.sh exports it)`);
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const input = new ort.Tensor('float32', fillInput(batch * 3 * size * size), [batch, 3, size, size]);
  const feeds = { [session.inputNames[0]]: input };
  const check = (out) => {
    const logits = out[session.outputNames[0]];
    if (logits.dims.length !== 2 || logits.dims[0] !== batch || logits.dims[1] !== 1000)
      die(`${c}: ${file} returned logits of shape [${logits.dims}], expected [${batch},1000]`);
  };
  check(await session.run(feeds));  // warm-up, as the C++ benchmark
  let n = 0, elapsed = 0;
  const start = process.hrtime.bigint();
  for (;;) {
    await session.run(feeds);
    ++n;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (elapsed >= args.minTime) break;
  }
  await session.release();
  const ms = (1000 * elapsed) / n;
  const ips = (batch * n) / elapsed;
  console.log(`${c.padEnd(14)} ${ms.toFixed(1).padStart(10)} ms/iter ${ips.toFixed(2).padStart(9)} images/s (${n} iterations)`);
}

const args = parseArgs(process.argv.slice(2));
let ort;
try {
  ort = createRequire(path.join(path.resolve(args.ortDir), 'package.json'))('onnxruntime-node');
} catch (e) {
  die(`cannot load onnxruntime-node from ${args.ortDir}/node_modules: ${e.message}`);
}
console.log(`onnxruntime-node ${ort.env.versions.node}, intra-op threads 2, inter-op threads 1, ` +
            `graph optimization all, ${args.dynamic ? 'dynamic' : 'fixed'} shapes`);
for (const c of args.cases) await runCase(ort, args, c);
