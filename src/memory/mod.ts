// Guest memory: the physical layout and bounds-checked access to guest RAM.
export * from "./guest_memory.js";
export * from "./iovec.js";
export * from "./layout.js";
