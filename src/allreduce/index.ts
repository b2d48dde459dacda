export { Allreducer, ALLREDUCE_ALGOS, ALLREDUCE_DEFAULTS, type AllreduceAlgo, type AllreduceOptions } from "./allreducer.js";
export { broadcast } from "./broadcast.js";
export { doublingAllreduce } from "./doubling.js";
export { PeerGroup, type PeerGroupOptions } from "./peer-group.js";
export { chunkStart, type ReduceOp, ringAllreduce } from "./ring.js";
