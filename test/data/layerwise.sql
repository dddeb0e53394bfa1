-- layerwise.sql: a small layer-wise profile in the shape of an nsys 2025.3 SQLite export, built by
-- the tests (test/parse_fixture.h runs this script into a fresh database).
--
-- One process (pid 4242), main thread 4242, a second thread 4250. Times below are in µs; the
-- tables hold ns. The NVTX contract of the layer-wise benchmarks:
--   900   "layer_wise_benchmarks args {...}"   warmup_times 1 (registered string, textId)
--   1000  problem 1 "b=1 s=1 past=100 NP1": eager. A forward before the runs (dropped), then
--         3 iterations (run 0 is warm-up) at CPU 1100, 1300, 1500.
--   2000  problem 2 "b=2 s=1 past=100 NP1": CUDA graph. An eager forward (dropped), a capture
--         at CPU 2100 (node creation events 101..107), instantiation at 2190 (exec nodes
--         201..207 cloned from 101..107), 3 graph launches at CPU 2300, 2500, 2700.
--
-- One forward launches, inside module ranges (CPU offsets from the forward's start):
--   MLA [1,10]              K1 mlaRopeKernel (GPU 0..k1, k1 varies per run)
--                           K2 nvjet (p1, inside a "[DG] ..." range) / cutlass GemmUniversal (p2)
--                              GPU k1+2 .. k1+22
--   Deepseekv3MoE [11,40]
--     DeepseekV3Gate [12,20] K3 routingKernel   k1+22 .. k1+27
--     MoE [21,39]            memset              k1+28 .. k1+29
--                            K4 cutlass grouped  k1+29 .. k1+59
--                            K5 FillFunctor      k1+55 .. k1+59  (other stream: 4 µs overlap)
--   (no module; p1: inside an NCCL-domain range, ignored)
--                           K6 AbsFunctor (unknown torch kernel) k1+62 .. k1+64
--   p1 only: "layer_wise_benchmarks ignore" [44,47] around a memcpy (dropped)
-- Per run: kernels k1+62 µs, Space 2+1+3 = 6, Overlap 4, Total k1+64 (the span).
-- k1 per kept run: p1 10, 12 (mean 11: Total 75); p2 14, 16 (mean 15: Total 79).
-- Thread 4250 holds a range "DataLoader" over all of problem 1: a different thread, so it must
-- not appear in any module path. One launch has a backtrace duplicate (eventClass 67) with a
-- wrong time, listed first: it must be ignored.

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
CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL,
  deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER,
  streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, bytes INTEGER NOT NULL,
  copyKind INTEGER NOT NULL, deprecatedSrcId INTEGER, srcKind INTEGER, dstKind INTEGER,
  srcDeviceId INTEGER, srcContextId INTEGER, dstDeviceId INTEGER, dstContextId INTEGER,
  migrationCause INTEGER, graphNodeId INTEGER, virtualAddress INTEGER, copyCount INTEGER);
CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL,
  rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER,
  endGlobalTid INTEGER, textId INTEGER, domainId INTEGER, uint64Value INTEGER,
  int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, int32Value INTEGER,
  floatValue REAL, jsonTextId INTEGER, jsonText TEXT, binaryData TEXT);
CREATE TABLE CUDA_GRAPH_NODE_EVENTS (start INTEGER NOT NULL, end INTEGER, eventClass INTEGER NOT NULL,
  globalTid INTEGER, nameId INTEGER NOT NULL, graphNodeId INTEGER NOT NULL,
  originalGraphNodeId INTEGER);
CREATE TABLE TARGET_INFO_GPU (vmId INTEGER, id INTEGER, name TEXT, smCount INTEGER);

INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_NAME', 'NVIDIA Nsight Systems'),
  ('EXPORT_PRODUCT_VERSION', '2025.3.2.0'), ('EXPORT_SCHEMA_VERSION', '3.20.3');
INSERT INTO ENUM_NSYS_EVENT_TYPE VALUES (34, 'NvtxMark', 'NVTX Mark'),
  (59, 'NvtxPushPopRange', 'NVTX PushPop Range'), (60, 'NvtxStartEndRange', 'NVTX StartEnd Range'),
  (75, 'NvtxDomainCreate', 'NVTX Domain Create');
INSERT INTO TARGET_INFO_GPU VALUES (1, 0, 'NVIDIA H100 80GB HBM3', 132);

INSERT INTO StringIds VALUES
  (1, 'cudaLaunchKernel_v7000'), (2, 'cudaMemsetAsync_v3020'), (3, 'cudaMemcpyAsync_v3020'),
  (4, 'cudaGraphLaunch_v10000'), (5, 'Graph Node Creation'),
  (10, 'void tensorrt_llm::kernels::mlaRopeKernel<__nv_bfloat16, 64>(tensorrt_llm::kernels::MlaParams<__nv_bfloat16>)'),
  (11, 'nvjet_hsh_128x64_64x4_2x1_v_bz_TNT'),
  (12, 'void cutlass::Kernel2<cutlass::gemm::kernel::GemmUniversal<cutlass::gemm::threadblock::MmaMultistage<float>>>(Params)'),
  (13, 'void tensorrt_llm::kernels::routingKernel<float, 256>(tensorrt_llm::kernels::RoutingParams)'),
  (14, 'void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cutlass::gemm::GroupProblemShape<int>>>(Params)'),
  (15, 'void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char *, 1>>(int, at::native::FillFunctor<float>, std::array<char *, 1>)'),
  (16, 'void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::AbsFunctor<float>>(at::TensorIteratorBase &, const T1 &)::{lambda(int)#1}>(int, T3)'),
  (20, 'layer_wise_benchmarks args {"batch_size_list": [1, 2], "seq_len_q_list": [1], "seq_len_kv_cache_list": [100], "balance_ratio_list": [null], "warmup_times": 1, "run_times": 2}'),
  (21, 'layer_wise_benchmarks problem_spec {"batch_size": 1, "seq_len_q": 1, "seq_len_kv_cache": 100, "balance_ratio": null}'),
  (22, 'layer_wise_benchmarks problem_spec {"batch_size": 2, "seq_len_q": 1, "seq_len_kv_cache": 100, "balance_ratio": null}'),
  (23, 'b=1 s=1 past=100 NP1'), (24, 'b=2 s=1 past=100 NP1');

-- One forward of each problem: what it launches (kind k kernel, s memset, c memcpy), the CPU
-- offset of the launch call (it lasts 0.5 µs) and the GPU start after the end of K1.
CREATE TEMP TABLE fwd (p INTEGER, seq INTEGER, kind TEXT, name INTEGER, cpu REAL, gpu REAL, dur REAL, stream INTEGER);
INSERT INTO fwd VALUES
  (1, 1, 'k', 10,  2,  0, NULL, 7), (1, 2, 'k', 11,  5,  2, 20, 7), (1, 3, 'k', 13, 13, 22, 5, 7),
  (1, 4, 's', NULL, 22, 28, 1, 7), (1, 5, 'k', 14, 25, 29, 30, 7), (1, 6, 'k', 15, 28, 55, 4, 8),
  (1, 7, 'k', 16, 42, 62,  2, 7), (1, 8, 'c', NULL, 45, 70, 1, 7),
  (2, 1, 'k', 10,  2,  0, NULL, 7), (2, 2, 'k', 12,  5,  2, 20, 7), (2, 3, 'k', 13, 13, 22, 5, 7),
  (2, 4, 's', NULL, 22, 28, 1, 7), (2, 5, 'k', 14, 25, 29, 30, 7), (2, 6, 'k', 15, 28, 55, 4, 8),
  (2, 7, 'k', 16, 42, 62,  2, 7);
-- Its NVTX ranges (domain 1 is NCCL's).
CREATE TEMP TABLE fwd_range (p INTEGER, text TEXT, domain INTEGER, a REAL, b REAL);
INSERT INTO fwd_range VALUES
  (1, 'MLA', 0, 1, 10), (1, '[DG] nvjet_gemm', 0, 4, 7), (1, 'Deepseekv3MoE', 0, 11, 40),
  (1, 'DeepseekV3Gate', 0, 12, 20), (1, 'MoE', 0, 21, 39), (1, 'AllReduce', 1, 41, 43),
  (1, 'layer_wise_benchmarks ignore', 0, 44, 47),
  (2, 'MLA', 0, 1, 10), (2, 'Deepseekv3MoE', 0, 11, 40), (2, 'DeepseekV3Gate', 0, 12, 20),
  (2, 'MoE', 0, 21, 39);
-- Every forward: pre (eager, before the runs), run (an eager iteration), cap (capture into a
-- graph: ranges and node creation, no kernels), replay (an iteration that launches the graph).
CREATE TEMP TABLE inst (id INTEGER, p INTEGER, mode TEXT, cpu REAL, gpu REAL, k1 REAL);
INSERT INTO inst VALUES
  (1, 1, 'pre', 1010, 1012, 9), (2, 1, 'run', 1100, 1102, 100), (3, 1, 'run', 1300, 1302, 10),
  (4, 1, 'run', 1500, 1502, 12),
  (5, 2, 'pre', 2010, 2012, 9), (6, 2, 'cap', 2100, NULL, NULL), (7, 2, 'replay', 2300, 2302, 50),
  (8, 2, 'replay', 2500, 2502, 14), (9, 2, 'replay', 2700, 2702, 16);
CREATE TEMP TABLE ids (pid INTEGER, tid INTEGER, tid2 INTEGER);
INSERT INTO ids VALUES (281474976710656 + 4242 * 16777216, 281474976710656 + 4242 * 16777216 + 4242,
  281474976710656 + 4242 * 16777216 + 4250);

-- GPU activities. Eager: correlationId inst*100+seq. Graph replays: the graph launch's, inst*100+99,
-- and graphNodeId 200+seq (the exec node).
CREATE TEMP VIEW act AS
SELECT i.id AS inst, f.seq, f.kind, f.name, f.stream, i.mode,
  CAST(round((i.gpu + CASE WHEN f.seq = 1 THEN 0 ELSE i.k1 + f.gpu END) * 1000) AS INTEGER) AS s,
  CAST(round((i.gpu + CASE WHEN f.seq = 1 THEN i.k1 ELSE i.k1 + f.gpu + f.dur END) * 1000) AS INTEGER) AS e,
  CASE WHEN i.mode = 'replay' THEN i.id * 100 + 99 ELSE i.id * 100 + f.seq END AS corr,
  CASE WHEN i.mode = 'replay' THEN 200 + f.seq END AS node
FROM inst i JOIN fwd f ON f.p = i.p WHERE i.mode IN ('pre', 'run', 'replay');

INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, correlationId,
  globalPid, demangledName, shortName, mangledName, launchType, registersPerThread, gridX, gridY,
  gridZ, blockX, blockY, blockZ, staticSharedMemory, dynamicSharedMemory, localMemoryPerThread,
  localMemoryTotal, gridId, graphNodeId)
SELECT s, e, 0, 1, stream, corr, (SELECT pid FROM ids), name, name, name, 1, 64, 132, 1, 1, 128, 1, 1,
  0, 0, 0, 0, inst * 100 + seq, node FROM act WHERE kind = 'k' ORDER BY s;
INSERT INTO CUPTI_ACTIVITY_KIND_MEMSET (start, end, deviceId, contextId, streamId, correlationId,
  globalPid, value, bytes, graphNodeId, memKind)
SELECT s, e, 0, 1, stream, corr, (SELECT pid FROM ids), 0, 4096, node, 2 FROM act WHERE kind = 's';
INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, streamId, correlationId,
  globalPid, bytes, copyKind, srcKind, dstKind, graphNodeId)
SELECT s, e, 0, 1, stream, corr, (SELECT pid FROM ids), 64, 8, 2, 2, node FROM act WHERE kind = 'c';

-- Launch calls: the backtrace duplicate first, then eager launches (captured ones too), then
-- the graph launches.
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (5000000, 5000500, 67, (SELECT tid FROM ids), 301, 1, 0, 1);
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, returnValue)
SELECT CAST(round((i.cpu + f.cpu) * 1000) AS INTEGER), CAST(round((i.cpu + f.cpu + 0.5) * 1000) AS INTEGER),
  0, (SELECT tid FROM ids), i.id * 100 + f.seq, CASE f.kind WHEN 'k' THEN 1 WHEN 's' THEN 2 ELSE 3 END, 0
FROM inst i JOIN fwd f ON f.p = i.p WHERE i.mode IN ('pre', 'run', 'cap') ORDER BY 1;
INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, returnValue)
SELECT CAST((cpu + 1) * 1000 AS INTEGER), CAST((cpu + 1.5) * 1000 AS INTEGER), 0, (SELECT tid FROM ids),
  id * 100 + 99, 4, 0 FROM inst WHERE mode = 'replay';

-- Graph nodes: created during the capture (on the main thread, at the launch call), then cloned
-- into the executable graph at instantiation.
INSERT INTO CUDA_GRAPH_NODE_EVENTS
SELECT CAST(round((i.cpu + f.cpu) * 1000) AS INTEGER), CAST(round((i.cpu + f.cpu + 0.5) * 1000) AS INTEGER),
  77, (SELECT tid FROM ids), 5, 100 + f.seq, NULL
FROM inst i JOIN fwd f ON f.p = i.p WHERE i.mode = 'cap';
INSERT INTO CUDA_GRAPH_NODE_EVENTS
SELECT 2190000, 2190500, 77, (SELECT tid FROM ids), 5, 200 + seq, 100 + seq FROM fwd WHERE p = 2;

-- NVTX: markers and iterations use registered strings (textId), module ranges inline text.
INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) VALUES
  (950000, NULL, 75, 'NCCL', (SELECT tid FROM ids), 1),
  (1005000, 1900000, 59, 'DataLoader', (SELECT tid2 FROM ids), 0);
INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId) VALUES
  (900000, 900000, 59, 20, (SELECT tid FROM ids), 0),
  (1000000, 1000000, 59, 21, (SELECT tid FROM ids), 0),
  (2000000, 2000000, 59, 22, (SELECT tid FROM ids), 0);
INSERT INTO NVTX_EVENTS (start, end, eventType, textId, globalTid, domainId)
SELECT CAST((cpu - 1) * 1000 AS INTEGER), CAST((cpu + CASE mode WHEN 'run' THEN 50 ELSE 10 END) * 1000 AS INTEGER),
  59, 22 + p, (SELECT tid FROM ids), 0 FROM inst WHERE mode IN ('run', 'replay');
INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId)
SELECT CAST((i.cpu + r.a) * 1000 AS INTEGER), CAST((i.cpu + r.b) * 1000 AS INTEGER), 59, r.text,
  (SELECT tid FROM ids), r.domain
FROM inst i JOIN fwd_range r ON r.p = i.p WHERE i.mode IN ('pre', 'run', 'cap') ORDER BY 1;
