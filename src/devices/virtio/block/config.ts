// The virtio-blk device configuration space (virtio 1.2 §5.2.4): the layout the driver reads
// at offset 0x100 of the transport, the feature bits that make each field valid, and the
// limits this device enforces on discard and write-zeroes requests. The bytes are encoded
// once at construction; every field is read-only to the driver (no VIRTIO_BLK_F_CONFIG_WCE).

/** Feature bits (virtio 1.2 §5.2.3). */
export const VIRTIO_BLK_F_SIZE_MAX = 1n;
export const VIRTIO_BLK_F_SEG_MAX = 2n;
export const VIRTIO_BLK_F_GEOMETRY = 4n;
export const VIRTIO_BLK_F_RO = 5n;
export const VIRTIO_BLK_F_BLK_SIZE = 6n;
export const VIRTIO_BLK_F_FLUSH = 9n;
export const VIRTIO_BLK_F_TOPOLOGY = 10n;
export const VIRTIO_BLK_F_CONFIG_WCE = 11n;
export const VIRTIO_BLK_F_MQ = 12n;
export const VIRTIO_BLK_F_DISCARD = 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14n;

/** The logical sector: capacity and request sectors are always in 512-byte units (§5.2.4). */
export const SECTOR_SIZE = 512;
export const SECTOR_SHIFT = 9;

// Field offsets in struct virtio_blk_config (§5.2.4).
const OFF_CAPACITY = 0; // le64
const OFF_SIZE_MAX = 8; // le32
const OFF_SEG_MAX = 12; // le32
// geometry (le16 cylinders, u8 heads, u8 sectors) at 16: left zero, GEOMETRY not offered
const OFF_BLK_SIZE = 20; // le32
// topology at 24..31 and writeback/unused0/num_queues at 32..35: zero (not offered)
const OFF_MAX_DISCARD_SECTORS = 36; // le32
const OFF_MAX_DISCARD_SEG = 40; // le32
const OFF_DISCARD_SECTOR_ALIGNMENT = 44; // le32
const OFF_MAX_WRITE_ZEROES_SECTORS = 48; // le32
const OFF_MAX_WRITE_ZEROES_SEG = 52; // le32
const OFF_WRITE_ZEROES_MAY_UNMAP = 56; // u8, then u8 unused1[3]
/** Bytes of config this device implements (through unused1); reads beyond give zero. */
export const BLOCK_CONFIG_SIZE = 60;

/** The values a virtio-blk device reports; a plain JSON object (part of the snapshot state). */
export interface BlockConfig {
  /** Disk size in 512-byte sectors. */
  capacity: number;
  /** Largest single buffer; only meaningful with VIRTIO_BLK_F_SIZE_MAX (not offered: 0). */
  sizeMax: number;
  /** Most data buffers in one request (VIRTIO_BLK_F_SEG_MAX). */
  segMax: number;
  /** Optimal block size (VIRTIO_BLK_F_BLK_SIZE); requests stay in 512-byte sectors. */
  blkSize: number;
  /** Per-segment sector limit of a discard (VIRTIO_BLK_F_DISCARD). */
  maxDiscardSectors: number;
  /** Segments in one discard request. */
  maxDiscardSeg: number;
  /** Discard granularity in sectors (Linux: discard_granularity = this << 9). */
  discardSectorAlignment: number;
  /** Per-segment sector limit of a write-zeroes (VIRTIO_BLK_F_WRITE_ZEROES). */
  maxWriteZeroesSectors: number;
  /** Segments in one write-zeroes request. */
  maxWriteZeroesSeg: number;
  /** The device may deallocate on write-zeroes with the unmap flag (reads still give zero). */
  writeZeroesMayUnmap: boolean;
}

/** Per-segment limit for discard and write-zeroes: 2^22 - 1 sectors (just under 2 GiB). */
export const DEFAULT_MAX_DISCARD_SECTORS = 0x3f_ffff;
/** Segments per discard / write-zeroes request; Linux caps its use at 256. */
export const DEFAULT_MAX_DISCARD_SEG = 32;
/** 8 sectors = 4 KiB: hole punching works in filesystem blocks. */
export const DEFAULT_DISCARD_SECTOR_ALIGNMENT = 8;

/** The configuration for a disk of `capacity` sectors served through a queue of `queueSize`. */
export function blockConfig(capacity: number, queueSize: number): BlockConfig {
  return {
    capacity,
    sizeMax: 0,
    // Two descriptors of every chain carry the header and the status byte (as Linux assumes).
    segMax: queueSize - 2,
    blkSize: SECTOR_SIZE,
    maxDiscardSectors: DEFAULT_MAX_DISCARD_SECTORS,
    maxDiscardSeg: DEFAULT_MAX_DISCARD_SEG,
    discardSectorAlignment: DEFAULT_DISCARD_SECTOR_ALIGNMENT,
    maxWriteZeroesSectors: DEFAULT_MAX_DISCARD_SECTORS,
    maxWriteZeroesSeg: DEFAULT_MAX_DISCARD_SEG,
    writeZeroesMayUnmap: true,
  };
}

/** Encode `config` as the little-endian struct virtio_blk_config the driver reads. */
export function encodeBlockConfig(config: BlockConfig): Uint8Array {
  const bytes = new Uint8Array(BLOCK_CONFIG_SIZE);
  const v = new DataView(bytes.buffer);
  v.setBigUint64(OFF_CAPACITY, BigInt(config.capacity), true);
  v.setUint32(OFF_SIZE_MAX, config.sizeMax, true);
  v.setUint32(OFF_SEG_MAX, config.segMax, true);
  v.setUint32(OFF_BLK_SIZE, config.blkSize, true);
  v.setUint32(OFF_MAX_DISCARD_SECTORS, config.maxDiscardSectors, true);
  v.setUint32(OFF_MAX_DISCARD_SEG, config.maxDiscardSeg, true);
  v.setUint32(OFF_DISCARD_SECTOR_ALIGNMENT, config.discardSectorAlignment, true);
  v.setUint32(OFF_MAX_WRITE_ZEROES_SECTORS, config.maxWriteZeroesSectors, true);
  v.setUint32(OFF_MAX_WRITE_ZEROES_SEG, config.maxWriteZeroesSeg, true);
  v.setUint8(OFF_WRITE_ZEROES_MAY_UNMAP, config.writeZeroesMayUnmap ? 1 : 0);
  return bytes;
}

/**
 * Copy config bytes at `offset` into `data`; bytes past the end (or at a nonsense offset)
 * read as zero. Never throws.
 */
export function readConfigBytes(bytes: Uint8Array, offset: number, data: Uint8Array): void {
  data.fill(0);
  // GUEST-CONTROLLED: offset and data.length come from a driver's config read.
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= bytes.length) return;
  const n = Math.min(data.length, bytes.length - offset);
  data.set(bytes.subarray(offset, offset + n));
}
