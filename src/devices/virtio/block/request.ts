// Turning one descriptor chain into a virtio-blk request (virtio 1.2 §5.2.6). The chain
// has been validated by the queue (buffers lie in guest RAM, readable before writable), but
// everything inside it is the guest's word: the header's type and sector, the buffer
// lengths, the discard segments. parseRequest() checks all of it before any I/O is issued,
// and says which status the driver should get when it refuses. It never throws. The
// layout is not assumed to follow descriptor boundaries (§2.7.4 "Message Framing"): the
// header, the segments and the status byte are found by byte offset across the buffers.

import type { DescriptorBuffer, DescriptorChain } from "../../../virtio/device.js";
import { SECTOR_SIZE } from "./config.js";

/** Request types (virtio 1.2 §5.2.6). */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

/** Status values (virtio 1.2 §5.2.6). */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Length of the GET_ID string (§5.2.6: "up to 20 bytes"). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** struct virtio_blk_discard_write_zeroes flags (§5.2.6). */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** struct virtio_blk_req header: le32 type, le32 reserved, le64 sector. */
export const REQUEST_HEADER_SIZE = 16;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const SEGMENT_SIZE = 16;

/** A span of guest-physical memory. */
export interface GuestRange {
  address: number;
  length: number;
}

/** One discard or write-zeroes range, already checked to lie within the disk. */
export interface BlockSegment {
  /** Byte offset and length in the image. */
  offset: number;
  length: number;
  unmap: boolean;
}

export interface BlockRequest {
  head: number;
  /** One of IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES. */
  type: number;
  /** Byte offset in the image (IN/OUT; 0 otherwise). */
  offset: number;
  /**
   * The data: IN and GET_ID: device-writable bytes (GET_ID: exactly 20), OUT: the
   * driver-readable bytes after the header. Empty for the other types.
   */
  data: GuestRange[];
  dataLength: number;
  /** DISCARD / WRITE_ZEROES ranges. */
  segments: BlockSegment[];
  /** Guest address of the status byte (the chain's last writable byte). */
  statusAddress: number;
}

export interface ParseRefusal {
  head: number;
  /** Where to write `status`, or undefined when the chain has no writable byte at all. */
  statusAddress: number | undefined;
  status: number;
  /** True for a well-formed request of a type we do not implement (not a guest error). */
  unsupported: boolean;
  reason: string;
}

export type ParseResult =
  | { ok: true; request: BlockRequest }
  | { ok: false; refusal: ParseRefusal };

/** What the parser checks requests against. */
export interface RequestLimits {
  /** Disk size in 512-byte sectors. */
  capacity: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  /** Which optional request types the driver negotiated; others get VIRTIO_BLK_S_UNSUPP. */
  flush: boolean;
  discard: boolean;
  writeZeroes: boolean;
}

/** The only guest-memory access the parser needs (GuestMemory provides it). */
export interface GuestReader {
  read(address: number, out: Uint8Array): void;
}

// Scratch for the header and one segment; the parser is synchronous, so one buffer serves.
const scratch = new Uint8Array(16);
const scratchView = new DataView(scratch.buffer);

/**
 * Bytes [start, start+length) of the concatenation of `ranges`, as guest ranges. The
 * result may share range objects with `ranges` (neither is changed afterwards).
 */
export function subRanges(
  ranges: readonly GuestRange[],
  start: number,
  length: number,
): GuestRange[] {
  // Drivers frame requests on buffer boundaries (Linux: a 16-byte header buffer, the data
  // pages, a 1-byte status buffer); such a span is a run of whole buffers, taken as they
  // are rather than copied into one new object per page.
  let first = 0;
  let skip = start;
  while (first < ranges.length && skip >= (ranges[first] as GuestRange).length) {
    skip -= (ranges[first] as GuestRange).length;
    first++;
  }
  if (skip === 0) {
    let end = first;
    let want = length;
    // A zero-length buffer inside the span leaves it to the copying path, which drops it.
    while (end < ranges.length && want > 0) {
      const n = (ranges[end] as GuestRange).length;
      if (n === 0 || n > want) break;
      want -= n;
      end++;
    }
    if (want === 0) return ranges.slice(first, end);
  }
  // Otherwise copy, from the buffer the walk above stopped in.
  const out: GuestRange[] = [];
  let want = length;
  for (let i = first; i < ranges.length && want > 0; i++) {
    const r = ranges[i] as GuestRange;
    if (skip >= r.length) {
      skip -= r.length;
      continue;
    }
    const n = Math.min(r.length - skip, want);
    out.push({ address: r.address + skip, length: n });
    want -= n;
    skip = 0;
  }
  return out;
}

function gather(memory: GuestReader, ranges: readonly GuestRange[], start: number, n: number) {
  const out = scratch.subarray(0, n);
  let done = 0;
  for (const r of subRanges(ranges, start, n)) {
    memory.read(r.address, out.subarray(done, done + r.length));
    done += r.length;
  }
}

function total(buffers: readonly DescriptorBuffer[]): number {
  let n = 0;
  for (const b of buffers) {
    // GUEST-CONTROLLED: lengths were checked by the queue; recheck so a bad one cannot
    // turn into NaN or a negative span here.
    if (!Number.isSafeInteger(b.length) || b.length < 0 || !Number.isSafeInteger(b.address)) {
      return -1;
    }
    n += b.length;
  }
  return n;
}

function refuse(
  head: number,
  statusAddress: number | undefined,
  status: number,
  reason: string,
  unsupported = false,
): ParseResult {
  return { ok: false, refusal: { head, statusAddress, status, unsupported, reason } };
}

/** Parse and check one chain. Never throws. */
export function parseRequest(
  memory: GuestReader,
  chain: DescriptorChain,
  limits: RequestLimits,
): ParseResult {
  const head = chain.head;
  try {
    return parseChecked(memory, chain, limits);
  } catch (e) {
    // The queue promised the buffers lie in RAM; if that was wrong, refuse without a status.
    return refuse(head, undefined, VIRTIO_BLK_S_IOERR, `chain unreadable: ${String(e)}`);
  }
}

function parseChecked(
  memory: GuestReader,
  chain: DescriptorChain,
  limits: RequestLimits,
): ParseResult {
  const head = chain.head;
  const readable = chain.readable;
  const writable = chain.writable;
  // GUEST-CONTROLLED: buffer lengths; totals recomputed rather than taken from the chain.
  const readableLength = total(readable);
  const writableLength = total(writable);
  if (readableLength < 0 || writableLength < 0) {
    return refuse(head, undefined, VIRTIO_BLK_S_IOERR, "buffer with an invalid address or length");
  }
  // The status byte is the last device-writable byte (§5.2.6); without one nothing can be
  // reported, so the chain is only handed back.
  if (writableLength < 1) {
    return refuse(head, undefined, VIRTIO_BLK_S_IOERR, "no writable status byte");
  }
  const statusAddress = (subRanges(writable, writableLength - 1, 1)[0] as GuestRange).address;
  if (readableLength < REQUEST_HEADER_SIZE) {
    return refuse(
      head,
      statusAddress,
      VIRTIO_BLK_S_IOERR,
      `header is ${readableLength} bytes, need ${REQUEST_HEADER_SIZE}`,
    );
  }
  gather(memory, readable, 0, REQUEST_HEADER_SIZE);
  // GUEST-CONTROLLED: type and sector, checked per type below (reserved is ioprio: ignored).
  const type = scratchView.getUint32(0, true);
  const sector = scratchView.getBigUint64(8, true);
  const readBody = readableLength - REQUEST_HEADER_SIZE;
  const writeBody = writableLength - 1;
  const request: BlockRequest = {
    head,
    type,
    offset: 0,
    data: [],
    dataLength: 0,
    segments: [],
    statusAddress,
  };

  switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      const length = type === VIRTIO_BLK_T_IN ? writeBody : readBody;
      if (length % SECTOR_SIZE !== 0) {
        return refuse(head, statusAddress, VIRTIO_BLK_S_IOERR, `data length ${length} % 512 != 0`);
      }
      // GUEST-CONTROLLED: sector; compared as a bigint so a 2^64 - 1 cannot wrap.
      if (
        sector > BigInt(limits.capacity) ||
        Number(sector) + length / SECTOR_SIZE > limits.capacity
      ) {
        return refuse(
          head,
          statusAddress,
          VIRTIO_BLK_S_IOERR,
          `sector ${sector} + ${length / SECTOR_SIZE} beyond capacity ${limits.capacity}`,
        );
      }
      request.offset = Number(sector) * SECTOR_SIZE;
      request.data =
        type === VIRTIO_BLK_T_IN
          ? subRanges(writable, 0, length)
          : subRanges(readable, REQUEST_HEADER_SIZE, length);
      request.dataLength = length;
      return { ok: true, request };
    }
    case VIRTIO_BLK_T_FLUSH:
      if (!limits.flush) return unsupported(head, statusAddress, type);
      return { ok: true, request };
    case VIRTIO_BLK_T_GET_ID:
      if (writeBody < VIRTIO_BLK_ID_BYTES) {
        return refuse(
          head,
          statusAddress,
          VIRTIO_BLK_S_IOERR,
          `GET_ID buffer is ${writeBody} bytes`,
        );
      }
      request.data = subRanges(writable, 0, VIRTIO_BLK_ID_BYTES);
      request.dataLength = VIRTIO_BLK_ID_BYTES;
      return { ok: true, request };
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return parseSegments(memory, chain.readable, readBody, request, limits);
    default:
      return unsupported(head, statusAddress, type);
  }
}

function unsupported(head: number, statusAddress: number, type: number): ParseResult {
  return refuse(head, statusAddress, VIRTIO_BLK_S_UNSUPP, `unsupported request type ${type}`, true);
}

function parseSegments(
  memory: GuestReader,
  readable: readonly GuestRange[],
  readBody: number,
  request: BlockRequest,
  limits: RequestLimits,
): ParseResult {
  const { head, statusAddress, type } = request;
  const discard = type === VIRTIO_BLK_T_DISCARD;
  if (!(discard ? limits.discard : limits.writeZeroes)) {
    return unsupported(head, statusAddress, type);
  }
  const maxSeg = discard ? limits.maxDiscardSeg : limits.maxWriteZeroesSeg;
  const maxSectors = discard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors;
  // GUEST-CONTROLLED: the segment count comes from the readable length.
  if (readBody === 0 || readBody % SEGMENT_SIZE !== 0) {
    return refuse(head, statusAddress, VIRTIO_BLK_S_IOERR, `segment bytes ${readBody} % 16 != 0`);
  }
  const count = readBody / SEGMENT_SIZE;
  if (count > maxSeg) {
    return refuse(head, statusAddress, VIRTIO_BLK_S_IOERR, `${count} segments > ${maxSeg}`);
  }
  for (let i = 0; i < count; i++) {
    gather(memory, readable, REQUEST_HEADER_SIZE + i * SEGMENT_SIZE, SEGMENT_SIZE);
    // GUEST-CONTROLLED: each segment's sector, count and flags.
    const sector = scratchView.getBigUint64(0, true);
    const numSectors = scratchView.getUint32(8, true);
    const flags = scratchView.getUint32(12, true);
    // §5.2.6.2: unknown flags, or unmap on a discard, are VIRTIO_BLK_S_UNSUPP.
    if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (discard && flags !== 0)) {
      return refuse(
        head,
        statusAddress,
        VIRTIO_BLK_S_UNSUPP,
        `segment flags 0x${flags.toString(16)}`,
      );
    }
    if (numSectors > maxSectors) {
      return refuse(head, statusAddress, VIRTIO_BLK_S_IOERR, `segment of ${numSectors} sectors`);
    }
    if (sector > BigInt(limits.capacity) || Number(sector) + numSectors > limits.capacity) {
      return refuse(
        head,
        statusAddress,
        VIRTIO_BLK_S_IOERR,
        `segment sector ${sector} + ${numSectors} beyond capacity ${limits.capacity}`,
      );
    }
    request.segments.push({
      offset: Number(sector) * SECTOR_SIZE,
      length: numSectors * SECTOR_SIZE,
      unmap: flags !== 0,
    });
  }
  return { ok: true, request };
}
