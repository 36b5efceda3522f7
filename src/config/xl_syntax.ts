// The xl.cfg(5) file syntax, as Xen's own lexer and grammar define it
// (tools/libs/util/libxlu_cfg_l.l and libxlu_cfg_y.y): `key = value` settings separated by
// newlines or semicolons; values are quoted strings (C escapes), numbers, or lists that may
// nest, span lines and end in a comma; `#` starts a comment; `key += value` appends to an
// earlier setting; a later setting of a key replaces an earlier one. Keys are lower-case.
// Nothing is interpreted here beyond that: xl.ts gives the keys their meaning.

import { ImportError } from "./common.js";

export type XlValue =
  | { kind: "atom"; text: string; quoted: boolean; line: number }
  | { kind: "list"; items: XlValue[]; line: number };

type Token =
  | { t: "ident" | "number" | "string"; text: string; line: number }
  | { t: "," | "[" | "]" | "=" | "+=" | ";" | "newline" | "eof"; line: number };

function fail(line: number, problem: string): never {
  throw new ImportError("xl.cfg", `line ${line}`, problem);
}

const ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  "\\": "\\",
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
};

function dequote(body: string, line: number): string {
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i] as string;
    if (c !== "\\") {
      out += c;
      continue;
    }
    const n = body[++i] ?? "";
    const simple = ESCAPES[n];
    if (simple !== undefined) out += simple;
    else if (n === "x" || /[0-7]/.test(n)) {
      // libxlu's dequote parses numeric escapes but never stores the character (and always
      // rejects \x), so no working xl.cfg has one; refuse rather than guess a meaning.
      fail(line, `numeric escape "\\${n}" in a string is not supported (xl mishandles it too)`);
    } else fail(line, `unknown escape "\\${n}" in a string`);
  }
  return out;
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === " " || c === "\t" || c === "\r") {
      i++;
    } else if (c === "\n" || c === "#") {
      const end = text.indexOf("\n", i);
      tokens.push({ t: "newline", line });
      i = end === -1 ? text.length : end + 1;
      line++;
    } else if (c === "," || c === "[" || c === "]" || c === "=" || c === ";") {
      tokens.push({ t: c, line });
      i++;
    } else if (c === "+" && text[i + 1] === "=") {
      tokens.push({ t: "+=", line });
      i += 2;
    } else if (c === "'" || c === '"') {
      const m = new RegExp(`^${c}((?:[^${c}\\\\\\n]|\\\\.)*)${c}`).exec(text.slice(i));
      if (!m) fail(line, `unterminated string (strings end on the line they start)`);
      tokens.push({ t: "string", text: dequote(m[1] as string, line), line });
      i += m[0].length;
    } else {
      const word = /^(?:[a-z][._0-9a-z]*|[0-9][0-9a-fx]*)/.exec(text.slice(i));
      if (!word) {
        const bad = /^\S+/.exec(text.slice(i))?.[0] ?? c;
        const hint = /^[A-Z]/.test(bad) ? " (keys are lower-case)" : "";
        fail(line, `unexpected "${bad.slice(0, 20)}"${hint}`);
      }
      tokens.push({ t: /^[0-9]/.test(word[0]) ? "number" : "ident", text: word[0], line });
      i += word[0].length;
    }
  }
  tokens.push({ t: "eof", line });
  return tokens;
}

/** Nesting deeper than this is no configuration anyone writes; refuse it before the stack. */
const MAX_DEPTH = 32;

/** Parse xl.cfg text into its settings, last assignment winning, `+=` applied. */
export function parseXlCfg(text: string): Map<string, XlValue> {
  const tokens = tokenize(text);
  let pos = 0;
  const peek = () => tokens[pos] as Token;
  const next = () => tokens[pos++] as Token;
  const skipNewlines = () => {
    while (peek().t === "newline") pos++;
  };

  function value(depth: number): XlValue {
    const tok = next();
    if (tok.t === "string" || tok.t === "number")
      return { kind: "atom", text: tok.text, quoted: tok.t === "string", line: tok.line };
    if (tok.t !== "[") fail(tok.line, `expected a value, found ${describe(tok)}`);
    if (depth >= MAX_DEPTH) fail(tok.line, "lists nested too deeply");
    const items: XlValue[] = [];
    skipNewlines();
    while (peek().t !== "]") {
      items.push(value(depth + 1));
      skipNewlines();
      const sep = peek();
      if (sep.t === ",") {
        pos++;
        skipNewlines();
      } else if (sep.t !== "]") fail(sep.line, `expected "," or "]", found ${describe(sep)}`);
    }
    pos++;
    return { kind: "list", items, line: tok.line };
  }

  const settings = new Map<string, XlValue>();
  for (;;) {
    const tok = next();
    if (tok.t === "eof") break;
    if (tok.t === "newline" || tok.t === ";") continue;
    if (tok.t !== "ident") fail(tok.line, `expected a key, found ${describe(tok)}`);
    const op = next();
    if (op.t !== "=" && op.t !== "+=")
      fail(op.line, `expected "=" after ${tok.text}, found ${describe(op)}`);
    const v = value(0);
    const end = next();
    if (end.t !== "newline" && end.t !== ";" && end.t !== "eof")
      fail(end.line, `expected the end of the line after ${tok.text}, found ${describe(end)}`);
    if (end.t === "eof") pos--;
    const prev = settings.get(tok.text);
    settings.set(tok.text, op.t === "+=" && prev ? concat(tok.text, prev, v) : v);
  }
  return settings;
}

// libxlu's concatenation: strings join, lists append; mixing the two is an error.
function concat(key: string, a: XlValue, b: XlValue): XlValue {
  if (a.kind === "atom" && b.kind === "atom") return { ...a, text: a.text + b.text };
  if (a.kind === "list" && b.kind === "list") return { ...a, items: [...a.items, ...b.items] };
  return fail(b.line, `${key} += mixes a list and a single value`);
}

function describe(tok: Token): string {
  if (tok.t === "newline") return "the end of the line";
  if (tok.t === "eof") return "the end of the file";
  if (tok.t === "ident" || tok.t === "number") return `"${tok.text}"`;
  if (tok.t === "string") return "a string";
  return `"${tok.t}"`;
}
