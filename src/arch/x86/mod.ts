// x86-64 guest setup: boot protocols (bzImage, PVH), memory map, and initial vCPU state.
export * from "./bzimage.js";
export * from "./cpu.js";
export * from "./e820.js";
export * from "./layout.js";
export * from "./pvh.js";
