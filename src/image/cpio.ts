// The "newc" cpio format the Linux kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst), written and read back in
// TypeScript so building an image needs no `cpio` binary. Output is reproducible: inode
// numbers are assigned in order and every mtime is fixed.

/** One member of an archive. Directories must precede their contents. */
export type CpioEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Uint8Array; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev"; path: string; major: number; minor: number; mode?: number };

/** An entry as parsed back from an archive. */
export interface CpioParsedEntry {
  path: string;
  /** Full st_mode, file type bits included. */
  mode: number;
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
}

// File type bits of st_mode (inode(7)).
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const MAGIC = "070701";
const HEADER_SIZE = 110;
const TRAILER = "TRAILER!!!";
const FIXED_MTIME = 0;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`Cannot write cpio header: ${field} ${value} does not fit 32 bits`);
  }
  return value.toString(16).padStart(8, "0");
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  filesize: number;
  rdevMajor: number;
  rdevMinor: number;
  namesize: number;
}): Uint8Array {
  const text =
    MAGIC +
    hex8(fields.ino, "ino") +
    hex8(fields.mode, "mode") +
    hex8(0, "uid") +
    hex8(0, "gid") +
    hex8(fields.nlink, "nlink") +
    hex8(FIXED_MTIME, "mtime") +
    hex8(fields.filesize, "filesize") +
    hex8(0, "devmajor") +
    hex8(0, "devminor") +
    hex8(fields.rdevMajor, "rdevmajor") +
    hex8(fields.rdevMinor, "rdevminor") +
    hex8(fields.namesize, "namesize") +
    hex8(0, "check");
  return encoder.encode(text);
}

/** Serialise entries into an uncompressed newc archive, trailer included. */
export function writeNewc(entries: readonly CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (chunk: Uint8Array): void => {
    chunks.push(chunk);
    size += chunk.length;
  };
  const pushPadded = (chunk: Uint8Array): void => {
    push(chunk);
    const padding = pad4(size);
    if (padding > 0) push(new Uint8Array(padding));
  };
  const seen = new Set<string>();
  let ino = 1;
  const emit = (
    path: string,
    mode: number,
    data: Uint8Array,
    nlink: number,
    rdev: [number, number],
  ): void => {
    const name = encoder.encode(`${path}\0`);
    push(
      header({
        ino: path === TRAILER ? 0 : ino++,
        mode,
        nlink,
        filesize: data.length,
        rdevMajor: rdev[0],
        rdevMinor: rdev[1],
        namesize: name.length,
      }),
    );
    pushPadded(name);
    if (data.length > 0) pushPadded(data);
  };
  for (const entry of entries) {
    const path = entry.path.replace(/^\/+/, "");
    if (path === "" || path.split("/").includes("..")) {
      throw new TypeError(`Cannot add cpio entry: bad path ${JSON.stringify(entry.path)}`);
    }
    if (seen.has(path)) throw new TypeError(`Cannot add cpio entry: duplicate path ${path}`);
    seen.add(path);
    switch (entry.type) {
      case "dir":
        emit(path, S_IFDIR | (entry.mode ?? 0o755), new Uint8Array(0), 2, [0, 0]);
        break;
      case "file":
        emit(path, S_IFREG | (entry.mode ?? 0o644), entry.data, 1, [0, 0]);
        break;
      case "symlink":
        emit(path, S_IFLNK | 0o777, encoder.encode(entry.target), 1, [0, 0]);
        break;
      case "chardev":
        emit(path, S_IFCHR | (entry.mode ?? 0o600), new Uint8Array(0), 1, [
          entry.major,
          entry.minor,
        ]);
        break;
    }
  }
  emit(TRAILER, 0, new Uint8Array(0), 1, [0, 0]);
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Parse an uncompressed newc archive; throws on anything malformed. */
export function parseNewc(archive: Uint8Array): CpioParsedEntry[] {
  const entries: CpioParsedEntry[] = [];
  let offset = 0;
  for (;;) {
    if (offset + HEADER_SIZE > archive.length) {
      throw new RangeError(`Cannot parse cpio: truncated header at offset ${offset}`);
    }
    const text = decoder.decode(archive.subarray(offset, offset + HEADER_SIZE));
    if (!text.startsWith(MAGIC)) {
      throw new TypeError(`Cannot parse cpio: bad magic at offset ${offset}`);
    }
    const field = (index: number): number => {
      const raw = text.slice(6 + index * 8, 14 + index * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(raw)) {
        throw new TypeError(`Cannot parse cpio: bad header field at offset ${offset}`);
      }
      return Number.parseInt(raw, 16);
    };
    const mode = field(1);
    const filesize = field(6);
    const rdevMajor = field(9);
    const rdevMinor = field(10);
    const namesize = field(11);
    const nameStart = offset + HEADER_SIZE;
    const nameEnd = nameStart + namesize;
    if (namesize < 1 || nameEnd > archive.length || archive[nameEnd - 1] !== 0) {
      throw new TypeError(`Cannot parse cpio: bad name at offset ${offset}`);
    }
    const path = decoder.decode(archive.subarray(nameStart, nameEnd - 1));
    const dataStart = nameEnd + pad4(nameEnd);
    const dataEnd = dataStart + filesize;
    if (dataEnd > archive.length) {
      throw new RangeError(`Cannot parse cpio: ${path} runs past the end of the archive`);
    }
    if (path === TRAILER) return entries;
    entries.push({
      path,
      mode,
      data: archive.subarray(dataStart, dataEnd),
      rdevMajor,
      rdevMinor,
    });
    offset = dataEnd + pad4(dataEnd);
  }
}
