// A small encoder for the ACPI Machine Language (ACPI 6.5 §20), just big enough for the DSDT
// Vessel hands its guest: names, integers, strings, buffers, packages, devices, scopes,
// methods with a few operators, operation regions with fields, and resource templates (§6.4).
// Every builder returns the encoded bytes of one term, so a table body is a plain list of
// terms concatenated; nothing here knows about any particular device.

/** Encoded AML: the bytes of one or more terms. */
export type Aml = Uint8Array;

// §20.2.2 Name Objects Encoding
const RootChar = 0x5c; // '\'
const ParentPrefixChar = 0x5e; // '^'
const DualNamePrefix = 0x2e;
const MultiNamePrefix = 0x2f;
const NullName = 0x00;

// §20.2.3 Data Objects Encoding
const ZeroOp = 0x00;
const OneOp = 0x01;
const BytePrefix = 0x0a;
const WordPrefix = 0x0b;
const DWordPrefix = 0x0c;
const StringPrefix = 0x0d;
const QWordPrefix = 0x0e;

// §20.2.5 Term Objects Encoding
const ExtOpPrefix = 0x5b;
const NameOp = 0x08;
const ScopeOp = 0x10;
const BufferOp = 0x11;
const PackageOp = 0x12;
const MethodOp = 0x14;
const Local0Op = 0x60;
const Arg0Op = 0x68;
const StoreOp = 0x70;
const AndOp = 0x7b;
const OrOp = 0x7d;
const NotifyOp = 0x86;
const LAndOp = 0x90;
const LNotOp = 0x92;
const LEqualOp = 0x93;
const IfOp = 0xa0;
const ElseOp = 0xa1;
const ReturnOp = 0xa4;
const OpRegionOp = 0x80; // after ExtOpPrefix
const FieldOp = 0x81; // after ExtOpPrefix
const DeviceOp = 0x82; // after ExtOpPrefix

// §20.2.4 Package Length Encoding: at most 28 bits.
const PKG_LENGTH_MAX = 0x0fff_ffff;

/** Concatenate byte arrays (terms) into one. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * PkgLength for a body of `bodyLength` bytes (§20.2.4). The encoded value counts its own
 * bytes too, which is why the width is chosen by trying each in turn.
 */
export function pkgLength(bodyLength: number): Uint8Array {
  if (!Number.isInteger(bodyLength) || bodyLength < 0) {
    throw new RangeError(`Cannot encode PkgLength: ${bodyLength} is not a byte count`);
  }
  for (let width = 1; width <= 4; width++) {
    const encoded = encodePkgLength(bodyLength + width);
    if (encoded.length === width) return encoded;
  }
  throw new RangeError(`Cannot encode PkgLength: ${bodyLength} exceeds ${PKG_LENGTH_MAX}`);
}

/** The raw PkgLength encoding of `value` in the fewest bytes (§20.2.4). */
function encodePkgLength(value: number): Uint8Array {
  if (value > PKG_LENGTH_MAX) {
    throw new RangeError(`Cannot encode PkgLength: ${value} exceeds ${PKG_LENGTH_MAX}`);
  }
  // One byte holds 6 bits; with followers the lead keeps a 4-bit nibble, each follower 8 bits.
  if (value <= 0x3f) return Uint8Array.of(value);
  const extra = value < 1 << 12 ? 1 : value < 1 << 20 ? 2 : 3;
  const out = new Uint8Array(1 + extra);
  out[0] = (extra << 6) | (value & 0x0f);
  for (let i = 1; i <= extra; i++) out[i] = (value >>> (4 + 8 * (i - 1))) & 0xff;
  return out;
}

function withPkgLength(prefix: readonly number[], body: readonly Uint8Array[]): Aml {
  const inner = concat(body);
  return concat([Uint8Array.from(prefix), pkgLength(inner.length), inner]);
}

const NAME_SEG = /^[A-Z_][A-Z0-9_]{0,3}$/;

/** A NameSeg (§20.2.2): up to four characters, padded with '_' as ASL does. */
function nameSeg(seg: string): Uint8Array {
  if (!NAME_SEG.test(seg)) {
    throw new TypeError(`Cannot encode AML name segment "${seg}": not [A-Z_][A-Z0-9_]{0,3}`);
  }
  const padded = seg.padEnd(4, "_");
  return Uint8Array.from(padded, (c) => c.charCodeAt(0));
}

/**
 * A NameString (§20.2.2) from ASL-style path syntax: "\\_SB.COM1", "^PWRB", "_HID".
 * An empty relative path encodes as NullName.
 */
export function nameString(path: string): Aml {
  let at = 0;
  const prefix: number[] = [];
  if (path.startsWith("\\")) {
    prefix.push(RootChar);
    at = 1;
  } else {
    while (path[at] === "^") {
      prefix.push(ParentPrefixChar);
      at++;
    }
  }
  const rest = path.slice(at);
  const segs = rest === "" ? [] : rest.split(".").map(nameSeg);
  if (segs.length > 255)
    throw new RangeError(`Cannot encode AML name "${path}": too many segments`);
  const head = Uint8Array.from(prefix);
  if (segs.length === 0) return concat([head, Uint8Array.of(NullName)]);
  if (segs.length === 1) return concat([head, ...segs]);
  if (segs.length === 2) return concat([head, Uint8Array.of(DualNamePrefix), ...segs]);
  return concat([head, Uint8Array.of(MultiNamePrefix, segs.length), ...segs]);
}

/** The NullName target (§20.2.2), for operators whose result is not stored. */
const noTarget: Aml = Uint8Array.of(NullName);

/** An integer in its smallest encoding (§20.2.3): Zero, One, or a Byte/Word/DWord/QWord. */
export function integer(value: number | bigint): Aml {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`Cannot encode AML integer ${value}: outside 0..2^64-1`);
  }
  if (v === 0n) return Uint8Array.of(ZeroOp);
  if (v === 1n) return Uint8Array.of(OneOp);
  let prefix: number;
  let width: number;
  if (v <= 0xffn) [prefix, width] = [BytePrefix, 1];
  else if (v <= 0xffffn) [prefix, width] = [WordPrefix, 2];
  else if (v <= 0xffff_ffffn) [prefix, width] = [DWordPrefix, 4];
  else [prefix, width] = [QWordPrefix, 8];
  const out = new Uint8Array(1 + width);
  out[0] = prefix;
  for (let i = 0; i < width; i++) out[1 + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** A String (§20.2.3): ASCII characters 0x01..0x7F, NUL-terminated. */
export function string(text: string): Aml {
  const out = new Uint8Array(text.length + 2);
  out[0] = StringPrefix;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x01 || c > 0x7f) {
      throw new TypeError(`Cannot encode AML string "${text}": character ${c} is not ASCII`);
    }
    out[1 + i] = c;
  }
  return out;
}

/**
 * A compressed EISA ID (ACPI 6.5 §6.1.5 _HID) such as "PNP0C0C", as ASL's EisaId() makes it:
 * three letters of five bits and four hex digits, stored big-endian in a DWord.
 */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) {
    throw new TypeError(
      `Cannot encode EISA ID "${id}": expected three letters and four hex digits`,
    );
  }
  const letter = (i: number) => (id.charCodeAt(i) - 0x40) & 0x1f;
  const vendor = (letter(0) << 10) | (letter(1) << 5) | letter(2);
  const product = Number.parseInt(id.slice(3), 16);
  const value = ((vendor << 16) | product) >>> 0;
  // Byte-swap: the ID reads in order from the lowest address.
  const swapped =
    ((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24);
  return integer(swapped >>> 0);
}

/** A Buffer (§20.2.5.4 DefBuffer) holding `bytes`. */
export function buffer(bytes: Uint8Array): Aml {
  return withPkgLength([BufferOp], [integer(bytes.length), bytes]);
}

/** A Package (§20.2.5.4 DefPackage) of already-encoded elements. */
export function pkg(elements: readonly Aml[]): Aml {
  if (elements.length > 255) throw new RangeError("Cannot encode AML package: over 255 elements");
  return withPkgLength([PackageOp], [Uint8Array.of(elements.length), ...elements]);
}

/** Name(path, value) (§20.2.5.1 DefName). */
export function name(path: string, value: Aml): Aml {
  return concat([Uint8Array.of(NameOp), nameString(path), value]);
}

/** Scope(path) { body } (§20.2.5.1 DefScope). */
export function scope(path: string, body: readonly Aml[]): Aml {
  return withPkgLength([ScopeOp], [nameString(path), ...body]);
}

/** Device(path) { body } (§20.2.5.2 DefDevice). */
export function device(path: string, body: readonly Aml[]): Aml {
  return withPkgLength([ExtOpPrefix, DeviceOp], [nameString(path), ...body]);
}

/** Method(path, args, Serialized|NotSerialized) { body } (§20.2.5.2 DefMethod). */
export function method(
  path: string,
  argCount: number,
  serialized: boolean,
  body: readonly Aml[],
): Aml {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) {
    throw new RangeError(`Cannot encode AML method "${path}": ${argCount} arguments (0..7)`);
  }
  // MethodFlags: ArgCount in bits 0-2, SerializeFlag in bit 3, SyncLevel 0.
  const flags = argCount | (serialized ? 0x08 : 0);
  return withPkgLength([MethodOp], [nameString(path), Uint8Array.of(flags), ...body]);
}

/** LocalN (§20.2.6.2), N in 0..7. */
export function local(n: number): Aml {
  if (!Number.isInteger(n) || n < 0 || n > 7) throw new RangeError(`No AML Local${n}`);
  return Uint8Array.of(Local0Op + n);
}

/** ArgN (§20.2.6.1), N in 0..6. */
export function arg(n: number): Aml {
  if (!Number.isInteger(n) || n < 0 || n > 6) throw new RangeError(`No AML Arg${n}`);
  return Uint8Array.of(Arg0Op + n);
}

/** A reference to a named object, used as an operand or target. */
export function ref(path: string): Aml {
  return nameString(path);
}

/** Store(source, target) (§20.2.5.4 DefStore). */
export function store(source: Aml, target: Aml): Aml {
  return concat([Uint8Array.of(StoreOp), source, target]);
}

/** And(a, b) with no target, as an operand (§20.2.5.4 DefAnd). */
export function and(a: Aml, b: Aml): Aml {
  return concat([Uint8Array.of(AndOp), a, b, noTarget]);
}

/** Or(a, b) with no target, as an operand (§20.2.5.4 DefOr). */
export function or(a: Aml, b: Aml): Aml {
  return concat([Uint8Array.of(OrOp), a, b, noTarget]);
}

/** LEqual(a, b) (§20.2.5.4 DefLEqual). */
export function lEqual(a: Aml, b: Aml): Aml {
  return concat([Uint8Array.of(LEqualOp), a, b]);
}

/** LAnd(a, b) (§20.2.5.4 DefLAnd). */
export function lAnd(a: Aml, b: Aml): Aml {
  return concat([Uint8Array.of(LAndOp), a, b]);
}

/** LNot(a) (§20.2.5.4 DefLNot). */
export function lNot(a: Aml): Aml {
  return concat([Uint8Array.of(LNotOp), a]);
}

/** If(predicate) { body } (§20.2.5.3 DefIfElse). */
export function ifThen(predicate: Aml, body: readonly Aml[]): Aml {
  return withPkgLength([IfOp], [predicate, ...body]);
}

/** Else { body }, placed right after an If (§20.2.5.3 DefElse). */
export function orElse(body: readonly Aml[]): Aml {
  return withPkgLength([ElseOp], body);
}

/** Return(value) (§20.2.5.3 DefReturn). */
export function ret(value: Aml): Aml {
  return concat([Uint8Array.of(ReturnOp), value]);
}

/** Notify(target, value) (§20.2.5.3 DefNotify). */
export function notify(target: Aml, value: Aml): Aml {
  return concat([Uint8Array.of(NotifyOp), target, value]);
}

/** Operation region spaces (§19.6.100 OperationRegion, Table 19.30). */
export const RegionSpace = { SystemMemory: 0x00, SystemIO: 0x01 } as const;
export type RegionSpace = (typeof RegionSpace)[keyof typeof RegionSpace];

/** OperationRegion(name, space, offset, length) (§20.2.5.2 DefOpRegion). */
export function operationRegion(
  path: string,
  space: RegionSpace,
  offset: number | bigint,
  length: number,
): Aml {
  return concat([
    Uint8Array.of(ExtOpPrefix, OpRegionOp),
    nameString(path),
    Uint8Array.of(space),
    integer(offset),
    integer(length),
  ]);
}

/** Field access types (§19.6.48 Field, AccessType keyword). */
export const FieldAccess = { Any: 0, Byte: 1, Word: 2, DWord: 3, QWord: 4 } as const;
export type FieldAccess = (typeof FieldAccess)[keyof typeof FieldAccess];
/** Field update rules (§19.6.48 Field, UpdateRule keyword). */
export const FieldUpdate = { Preserve: 0, WriteAsOnes: 1, WriteAsZeros: 2 } as const;
export type FieldUpdate = (typeof FieldUpdate)[keyof typeof FieldUpdate];

/** One named field unit: a NameSeg and its width in bits. */
export interface FieldUnit {
  name: string;
  bits: number;
}

/** Field(region, access, NoLock, update) { units } (§20.2.5.2 DefField). */
export function field(
  region: string,
  access: FieldAccess,
  update: FieldUpdate,
  units: readonly FieldUnit[],
): Aml {
  // FieldFlags: AccessType bits 0-3, LockRule bit 4 (NoLock = 0), UpdateRule bits 5-6.
  const flags = access | (update << 5);
  const list = units.map((u) => {
    if (!Number.isInteger(u.bits) || u.bits < 1) {
      throw new RangeError(`Cannot encode AML field "${u.name}": width ${u.bits} bits`);
    }
    // NamedField := NameSeg PkgLength, where the "length" is the width in bits.
    return concat([nameSeg(u.name), encodePkgLength(u.bits)]);
  });
  return withPkgLength([ExtOpPrefix, FieldOp], [nameString(region), Uint8Array.of(flags), ...list]);
}

// §6.4 Resource Data Types for ACPI.

/** I/O Port Descriptor with 16-bit decode and a fixed base (§6.4.2.5). */
export function ioPort(base: number, length: number): Uint8Array {
  checkUint(base, 0xffff, "I/O port base");
  checkUint(length, 0xff, "I/O port length");
  // Small item, type 0x08, length 7; Information bit 0 = decodes 16 address bits.
  return Uint8Array.of(0x47, 0x01, base & 0xff, base >> 8, base & 0xff, base >> 8, 0x01, length);
}

/** 32-Bit Fixed Memory Range Descriptor (§6.4.3.4). */
export function memory32Fixed(writable: boolean, base: number, length: number): Uint8Array {
  checkUint(base, 0xffff_ffff, "Memory32Fixed base");
  checkUint(length, 0xffff_ffff, "Memory32Fixed length");
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  out[0] = 0x86; // large item, type 0x06
  view.setUint16(1, 9, true);
  out[3] = writable ? 1 : 0;
  view.setUint32(4, base, true);
  view.setUint32(8, length, true);
  return out;
}

/** How an interrupt is signalled, for the Extended Interrupt Descriptor. */
export interface InterruptMode {
  edge: boolean;
  activeLow: boolean;
  shared: boolean;
}

/** Extended Interrupt Descriptor, ResourceConsumer, one GSI (§6.4.3.6). */
export function interrupt(gsi: number, mode: InterruptMode): Uint8Array {
  checkUint(gsi, 0xffff_ffff, "interrupt number");
  const out = new Uint8Array(9);
  const view = new DataView(out.buffer);
  out[0] = 0x89; // large item, type 0x09
  view.setUint16(1, 6, true);
  // Flags: bit 0 consumer, bit 1 edge, bit 2 active low, bit 3 shared.
  out[3] = 0x01 | (mode.edge ? 0x02 : 0) | (mode.activeLow ? 0x04 : 0) | (mode.shared ? 0x08 : 0);
  out[4] = 1; // interrupt table length
  view.setUint32(5, gsi, true);
  return out;
}

/**
 * ResourceTemplate() { descriptors }: a Buffer of the descriptors closed by an End Tag
 * (§6.4.2.9) whose checksum is zero, which §6.4.2.9 says counts as a valid checksum.
 */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Aml {
  return buffer(concat([...descriptors, Uint8Array.of(0x79, 0x00)]));
}

function checkUint(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`Cannot encode ${what} ${value}: outside 0..${max}`);
  }
}
