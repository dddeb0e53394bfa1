-- e2e.sql: a small end-to-end serving profile in the shape of an nsys 2025.3 SQLite export, for
-- `lwb parse --e2e` (test/test_e2e.c runs this script into a fresh database).
--
-- It expects a temporary table made just before, in the same connection:
--   e2e_cfg(mode, form, first_layer): mode 'eager' (the MARK run: no CUDA graphs, a
--   "layer_wise_benchmarks layer_idx <i>" range around every decoder layer) or 'graph' (the
--   COLLECT run: generation iterations replay a CUDA graph captured before them; layer ranges
--   exist at the capture and in the eager context iterations); form 'old' ("X ctx reqs, Y gen
--   reqs") or 'new' ("X ctx reqs, T ctx tokens, Y gen reqs"); first_layer: the first marked
--   layer (three are marked).
--
-- One process (pid 5151), its executor thread 5151. Times below are in µs; the tables hold ns.
-- Executor iterations (ranges in the "TensorRT-LLM" NVTX domain, registered strings), iteration
-- N at CPU 1000 + 200 (N - 10), 180 long:
--   10: 2 ctx reqs (64 tokens), 0 gen    11-18: 0 ctx, 3 gen    19: 1 ctx (32 tokens), 3 gen
--   20-22: 0 ctx, 4 gen
-- The default target is 0 ctx / 3 gen (iteration 11, the first without context requests); 5
-- warm-up iterations leave 16, 17, 18.
--
-- One forward (CPU offsets from the iteration's start; a launch call lasts 1 µs; positions are
-- the eager order, GPU start at iteration start + 4 + 10 x position, graph replay: + 8 x position):
--   1 prepareInputs (cpu 2, 3 µs; eager in both runs)
--   layer l at [10 + 50 l, 55 + 50 l]: copy kernel (eager run only), rmsNormKernel 2 µs, an nvjet
--     GEMM 5 + (N mod 3) µs, moeTopKKernel 4 µs, (layer 1 only: a torch elementwise kernel the
--     short-name table does not know, 1 µs), a memset 1 µs
--   18 rmsNormKernel (the final norm, cpu 162)
--   19 samplingTopKKernel (cpu 170, 3 µs; eager in both runs)
-- The graph run launches the graph at cpu 8 (correlationId N*100+99); its nodes are positions
-- 3-6, 8-12, 14-18 (exec node 300 + position, cloned from the captured node 100 + position,
-- captured at CPU 500 + offset inside the capture's layer ranges).

CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE META_DATA_EXPORT (name TEXT, value TEXT);
CREATE TABLE ENUM_NSYS_EVENT_TYPE (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, label TEXT);
CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL,
  deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER,
  streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER,
  demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, mangledName INTEGER,
  launchType INTEGER, cacheConfig INTEGER, registersPerThread INTEGER NOT NULL,
  gridX INTEGER NOT NULL, gridY INTEGER NOT NULL, gridZ INTEGER NOT NULL,
  blockX INTEGER NOT NULL, blockY INTEGER NOT NULL, blockZ INTEGER NOT NULL,
  staticSharedMemory INTEGER NOT NULL, dynamicSharedMemory INTEGER NOT NULL,
  localMemoryPerThread INTEGER NOT NULL, localMemoryTotal INTEGER NOT NULL,
  gridId INTEGER NOT NULL, sharedMemoryExecuted INTEGER, graphNodeId INTEGER,
  sharedMemoryLimitConfig INTEGER);
CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL,
  eventClass INTEGER NOT NULL, globalTid INTEGER, correlationId INTEGER, nameId INTEGER NOT NULL,
  returnValue INTEGER NOT NULL, callchainId INTEGER);
CREATE TABLE CUPTI_ACTIVITY_KIND_MEMSET (start INTEGER NOT NULL, end INTEGER NOT NULL,
  deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER,
  streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, value INTEGER NOT NULL,
  bytes INTEGER NOT NULL, graphNodeId INTEGER, memKind INTEGER);
CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL,
  rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER,
  endGlobalTid INTEGER, textId INTEGER, domainId INTEGER, uint64Value INTEGER,
  int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, int32Value INTEGER,
  floatValue REAL, jsonTextId INTEGER, jsonText TEXT, binaryData TEXT);
CREATE TABLE CUDA_GRAPH_NODE_EVENTS (start INTEGER NOT NULL, end INTEGER, eventClass INTEGER NOT NULL,
  globalTid INTEGER, nameId INTEGER NOT NULL, graphNodeId INTEGER NOT NULL,
  originalGraphNodeId INTEGER);

INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_NAME', 'NVIDIA Nsight Systems'),
  ('EXPORT_PRODUCT_VERSION', '2025.3.2.0'), ('EXPORT_SCHEMA_VERSION', '3.20.3');
INSERT INTO ENUM_NSYS_EVENT_TYPE VALUES (34, 'NvtxMark', 'NVTX Mark'),
  (59, 'NvtxPushPopRange', 'NVTX PushPop Range'), (60, 'NvtxStartEndRange', 'NVTX StartEnd Range'),
  (75, 'NvtxDomainCreate', 'NVTX Domain Create');

CREATE TEMP TABLE ids (pid INTEGER, tid INTEGER);
INSERT INTO ids VALUES (281474976710656 + 5151 * 16777216, 281474976710656 + 5151 * 16777216 + 5151);

INSERT INTO StringIds VALUES
  (1, 'cudaLaunchKernel_v7000'), (2, 'cudaMemsetAsync_v3020'), (4, 'cudaGraphLaunch_v10000'),
  (5, 'Graph Node Creation'),
  (30, 'void tensorrt_llm::kernels::prepareInputs<int>(tensorrt_llm::kernels::Params)'),
  (31, 'void at::native::vectorized_elementwise_kernel<4, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase &)::{lambda()#3}::operator()() const::{lambda(float)#1}, std::array<char *, 2>>(int, T2, T3)'),
  (32, 'void tensorrt_llm::kernels::rmsNormKernel<__nv_bfloat16, 128>(tensorrt_llm::kernels::NormParams)'),
  (33, 'nvjet_hsh_64x32_64x16_4x1_v_bz_TNT'),
  (34, 'void tensorrt_llm::kernels::moeTopKKernel<float, 8>(tensorrt_llm::kernels::MoeParams)'),
  (35, 'void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::AbsFunctor<float>>(at::TensorIteratorBase &, const T1 &)::{lambda(int)#1}>(int, T3)'),
  (36, 'void tensorrt_llm::kernels::samplingTopKKernel<float>(tensorrt_llm::kernels::SamplingParams)');

CREATE TEMP TABLE step (id INTEGER, ctx INTEGER, tokens INTEGER, gen INTEGER);
INSERT INTO step VALUES (10, 2, 64, 0), (11, 0, 0, 3), (12, 0, 0, 3), (13, 0, 0, 3), (14, 0, 0, 3),
  (15, 0, 0, 3), (16, 0, 0, 3), (17, 0, 0, 3), (18, 0, 0, 3), (19, 1, 32, 3), (20, 0, 0, 4),
  (21, 0, 0, 4), (22, 0, 0, 4);
-- Each iteration: how it runs in this profile ('eager' or 'replay'), its CPU start.
CREATE TEMP VIEW iter AS
SELECT s.id, s.ctx, s.tokens, s.gen, 1000 + 200 * (s.id - 10) AS cpu,
  CASE WHEN c.mode = 'graph' AND s.ctx = 0 THEN 'replay' ELSE 'eager' END AS how
FROM step s, e2e_cfg c;
INSERT INTO StringIds SELECT 100 + s.id, '[Executor] _forward_step ' || s.id || ': ' || s.ctx || ' ctx reqs, ' ||
  CASE c.form WHEN 'new' THEN s.tokens || ' ctx tokens, ' ELSE '' END || s.gen || ' gen reqs'
FROM step s, e2e_cfg c;
INSERT INTO StringIds SELECT 50 + l, 'layer_wise_benchmarks layer_idx ' || (c.first_layer + l)
FROM (SELECT 0 AS l UNION ALL SELECT 1 UNION ALL SELECT 2), e2e_cfg c;

-- One forward: position, kind (k kernel, s memset), name, layer (-1: none), CPU offset, µs, and
-- how the graph run launches it (0: eagerly, 1: as a graph node, -1: not at all).
CREATE TEMP TABLE fwd (pos INTEGER, kind TEXT, name INTEGER, layer INTEGER, cpu REAL, dur REAL, g INTEGER);
INSERT INTO fwd VALUES
  (1, 'k', 30, -1, 2, 3, 0),
  (2, 'k', 31, 0, 12, 1, -1), (3, 'k', 32, 0, 16, 2, 1), (4, 'k', 33, 0, 20, 5, 1), (5, 'k', 34, 0, 24, 4, 1),
  (6, 's', NULL, 0, 32, 1, 1),
  (7, 'k', 31, 1, 62, 1, -1), (8, 'k', 32, 1, 66, 2, 1), (9, 'k', 33, 1, 70, 5, 1), (10, 'k', 34, 1, 74, 4, 1),
  (11, 'k', 35, 1, 78, 1, 1), (12, 's', NULL, 1, 82, 1, 1),
  (13, 'k', 31, 2, 112, 1, -1), (14, 'k', 32, 2, 116, 2, 1), (15, 'k', 33, 2, 120, 5, 1),
  (16, 'k', 34, 2, 124, 4, 1), (17, 's', NULL, 2, 132, 1, 1),
  (18, 'k', 32, -1, 162, 2, 1), (19, 'k', 36, -1, 170, 3, 0);

-- GPU activities. Eager launches: correlationId N*100 + position; graph nodes: the launch's.
CREATE TEMP VIEW act AS
SELECT i.id, f.pos, f.kind, f.name,
  CAST(round((i.cpu + 4 + (CASE i.how WHEN 'replay' THEN 8 ELSE 10 END) * f.pos) * 1000) AS INTEGER) AS s,
  CAST(round((i.cpu + 4 + (CASE i.how WHEN 'replay' THEN 8 ELSE 10 END) * f.pos + f.dur +
    CASE f.name WHEN 33 THEN i.id % 3 ELSE 0 END) * 1000) AS INTEGER) AS e,
  CASE WHEN i.how = 'replay' AND f.g = 1 THEN i.id * 100 + 99 ELSE i.id * 100 + f.pos END AS corr,
  CASE WHEN i.how = 'replay' AND f.g = 1 THEN 300 + f.pos END AS node
FROM iter i JOIN fwd f ON i.how = 'eager' OR f.g >= 0;

INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, correlationId,
  globalPid, demangledName, shortName, mangledName, launchType, registersPerThread, gridX, gridY,
  gridZ, blockX, blockY, blockZ, staticSharedMemory, dynamicSharedMemory, localMemoryPerThread,
  localMemoryTotal, gridId, graphNodeId)
SELECT s, e, 0, 1, 7, corr, (SELECT pid FROM ids), name, name, name, 1, 64, 132, 1, 1, 128, 1, 1,
  0, 0, 0, 0, id * 100 + pos, node FROM act WHERE kind = 'k' ORDER BY s;
INSERT INTO CUPTI_ACTIVITY_KIND_MEMSET (start, end, deviceId, contextId, streamId, correlationId,
  globalPid, value, bytes, graphNodeId, memKind)
SELECT s, e, 0, 1, 7, corr, (SELECT pid FROM ids), 0, 4096, node, 2 FROM act WHERE kind = 's' ORDER BY s;

-- Launch calls: eager ones, graph launches, and the capture's (graph run: CPU 500 + offset).
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, returnValue)
SELECT CAST(round((i.cpu + f.cpu) * 1000) AS INTEGER), CAST(round((i.cpu + f.cpu + 1) * 1000) AS INTEGER), 0,
  (SELECT tid FROM ids), i.id * 100 + f.pos, CASE f.kind WHEN 'k' THEN 1 ELSE 2 END, 0
FROM iter i JOIN fwd f ON (i.how = 'eager' OR f.g = 0) ORDER BY 1;
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, returnValue)
SELECT (cpu + 8) * 1000, (cpu + 9) * 1000, 0, (SELECT tid FROM ids), id * 100 + 99, 4, 0 FROM iter WHERE how = 'replay';
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, returnValue)
SELECT CAST(round((500 + f.cpu) * 1000) AS INTEGER), CAST(round((500 + f.cpu + 1) * 1000) AS INTEGER), 0,
  (SELECT tid FROM ids), 9000 + f.pos, CASE f.kind WHEN 'k' THEN 1 ELSE 2 END, 0
FROM fwd f, e2e_cfg c WHERE c.mode = 'graph' AND f.g = 1;

-- Graph nodes: created during the capture, cloned into the executable graph at CPU 700.
INSERT INTO CUDA_GRAPH_NODE_EVENTS
SELECT CAST(round((500 + f.cpu) * 1000) AS INTEGER), CAST(round((500 + f.cpu + 1) * 1000) AS INTEGER), 77,
  (SELECT tid FROM ids), 5, 100 + f.pos, NULL FROM fwd f, e2e_cfg c WHERE c.mode = 'graph' AND f.g = 1;
INSERT INTO CUDA_GRAPH_NODE_EVENTS
SELECT 700000, 700500, 77, (SELECT tid FROM ids), 5, 300 + f.pos, 100 + f.pos
FROM fwd f, e2e_cfg c WHERE c.mode = 'graph' AND f.g = 1;

-- NVTX: the domains (1: NCCL's, 2: TensorRT-LLM's), the executor's iterations (domain 2), layer
-- ranges (default domain) around every eager forward's layers and the capture's, and an
-- NCCL-domain range inside each layer (not a layer, not an iteration).
INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) VALUES
  (400000, NULL, 75, 'NCCL', (SELECT tid FROM ids), 1),
  (400000, NULL, 75, 'TensorRT-LLM', (SELECT tid FROM ids), 2);
INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId)
SELECT cpu * 1000, (cpu + 180) * 1000, 59, 100 + id, (SELECT tid FROM ids), 2 FROM iter;
CREATE TEMP VIEW fwd_at AS
SELECT cpu AS at FROM iter WHERE how = 'eager'
UNION ALL SELECT 500 FROM e2e_cfg WHERE mode = 'graph';
INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId)
SELECT (a.at + 10 + 50 * l.l) * 1000, (a.at + 55 + 50 * l.l) * 1000, 59, 50 + l.l, (SELECT tid FROM ids), 0
FROM fwd_at a, (SELECT 0 AS l UNION ALL SELECT 1 UNION ALL SELECT 2) l ORDER BY 1;
INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId)
SELECT (a.at + 40 + 50 * l.l) * 1000, (a.at + 45 + 50 * l.l) * 1000, 59, 'layer_wise_benchmarks layer_idx 99',
  (SELECT tid FROM ids), 1
FROM fwd_at a, (SELECT 0 AS l UNION ALL SELECT 1 UNION ALL SELECT 2) l ORDER BY 1;
