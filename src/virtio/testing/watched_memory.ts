// Guest memory that counts every access attempted outside RAM (through the bounds-checked
// accessors, which would throw), so tests can assert a device never even tried.

import { GuestMemory } from "../../memory/mod.js";

export class WatchedMemory extends GuestMemory {
  outside = 0;
  private check(a: number, n: number): void {
    if (!this.contains(a, n)) this.outside++;
  }
  override slice(a: number, n: number): Uint8Array {
    this.check(a, n);
    return super.slice(a, n);
  }
  override read(a: number, out: Uint8Array): void {
    this.check(a, out.length);
    super.read(a, out);
  }
  override write(a: number, data: Uint8Array): void {
    this.check(a, data.length);
    super.write(a, data);
  }
  override readU16(a: number): number {
    this.check(a, 2);
    return super.readU16(a);
  }
  override readU32(a: number): number {
    this.check(a, 4);
    return super.readU32(a);
  }
  override writeU16(a: number, x: number): void {
    this.check(a, 2);
    super.writeU16(a, x);
  }
  override writeU32(a: number, x: number): void {
    this.check(a, 4);
    super.writeU32(a, x);
  }
}
