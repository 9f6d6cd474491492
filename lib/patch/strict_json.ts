/**
 * A strict JSON parser for signed metadata (the patch manifest, key files).
 *
 * `JSON.parse` keeps the last of two duplicate keys, so two readers of the
 * same signed bytes could disagree on what they say. This parser accepts
 * exactly RFC 8259 JSON restricted to I-JSON (RFC 7493) and refuses, with
 * E_MANIFEST and a message saying where:
 *   - a duplicate key in any object, at any depth;
 *   - anything that is not JSON: trailing data, comments, NaN/Infinity,
 *     single quotes, trailing commas, a byte order mark, invalid UTF-8;
 *   - unpaired surrogate escapes, numbers that overflow to Infinity and
 *     integer literals beyond 2^53 - 1 (they would silently lose precision);
 *   - nesting deeper than `maxDepth` (32) and input longer than `maxBytes`.
 *
 * Objects are returned as plain objects whose keys are own data properties
 * (a key named `__proto__` is an ordinary key, never a prototype change).
 */
import { RevpatchError } from '../engine/errors';

export interface StrictJsonOptions {
  /** Largest accepted input, in bytes of UTF-8. Default 4 MiB. */
  maxBytes?: number;
  /** Deepest accepted nesting of arrays and objects. Default 32. */
  maxDepth?: number;
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export const DEFAULT_MAX_JSON_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_JSON_DEPTH = 32;

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

/** Parses `input` (UTF-8 bytes or a string) or throws RevpatchError E_MANIFEST. */
export function parseStrictJson(input: Uint8Array | string, options: StrictJsonOptions = {}): JsonValue {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_JSON_BYTES;
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  let text: string;
  if (typeof input === 'string') {
    if (Buffer.byteLength(input, 'utf8') > maxBytes) fail(`JSON is longer than ${maxBytes} bytes`);
    text = input;
  } else {
    if (input.byteLength > maxBytes) fail(`JSON is longer than ${maxBytes} bytes`);
    try {
      text = decoder.decode(input);
    } catch {
      fail('JSON is not valid UTF-8');
    }
  }
  return new Parser(text, maxDepth).parseDocument();
}

function fail(message: string): never {
  throw new RevpatchError('E_MANIFEST', message);
}

class Parser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {}

  parseDocument(): JsonValue {
    this.skipWhitespace();
    if (this.pos >= this.text.length) this.error('empty JSON text');
    const value = this.parseValue(0, '$');
    this.skipWhitespace();
    if (this.pos < this.text.length) this.error('unexpected data after the JSON value');
    return value;
  }

  private parseValue(depth: number, path: string): JsonValue {
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.parseObject(depth + 1, path);
      case '[':
        return this.parseArray(depth + 1, path);
      case '"':
        return this.parseString();
      case 't':
        return this.parseLiteral('true', true);
      case 'f':
        return this.parseLiteral('false', false);
      case 'n':
        return this.parseLiteral('null', null);
      default:
        if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.parseNumber();
        return this.error(c === undefined ? 'unexpected end of JSON' : `unexpected character ${JSON.stringify(c)}`);
    }
  }

  private parseObject(depth: number, path: string): JsonValue {
    this.checkDepth(depth);
    this.pos++; // '{'
    const result: { [key: string]: JsonValue } = {};
    const seen = new Set<string>();
    this.skipWhitespace();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.pos] !== '"') this.error('expected a string key');
      const keyAt = this.pos;
      const key = this.parseString();
      if (seen.has(key)) {
        this.error(`duplicate key ${JSON.stringify(key)} in the object at ${path}`, keyAt);
      }
      seen.add(key);
      this.skipWhitespace();
      this.expect(':');
      this.skipWhitespace();
      const value = this.parseValue(depth, `${path}.${key}`);
      Object.defineProperty(result, key, { value, enumerable: true, writable: true, configurable: true });
      this.skipWhitespace();
      const c = this.text[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === '}') {
        this.pos++;
        return result;
      }
      this.error("expected ',' or '}'");
    }
  }

  private parseArray(depth: number, path: string): JsonValue {
    this.checkDepth(depth);
    this.pos++; // '['
    const result: JsonValue[] = [];
    this.skipWhitespace();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      result.push(this.parseValue(depth, `${path}[${result.length}]`));
      this.skipWhitespace();
      const c = this.text[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === ']') {
        this.pos++;
        return result;
      }
      this.error("expected ',' or ']'");
    }
  }

  private parseString(): string {
    const text = this.text;
    this.pos++; // opening quote
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) this.error('unterminated string');
      const code = text.charCodeAt(this.pos);
      if (code === 0x22) {
        out += text.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (code < 0x20) this.error('unescaped control character in a string');
      if (code >= 0xd800 && code <= 0xdfff) {
        // Raw surrogates come from a JavaScript string input only (decoded
        // UTF-8 always pairs them); hold them to the same rule as escapes.
        const next = text.charCodeAt(this.pos + 1);
        if (code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          this.pos += 2;
          continue;
        }
        this.error('unpaired surrogate in a string');
      }
      if (code !== 0x5c) {
        this.pos++;
        continue;
      }
      out += text.slice(runStart, this.pos);
      this.pos++;
      const esc = text[this.pos];
      switch (esc) {
        case '"':
        case '\\':
        case '/':
          out += esc;
          this.pos++;
          break;
        case 'b':
          out += '\b';
          this.pos++;
          break;
        case 'f':
          out += '\f';
          this.pos++;
          break;
        case 'n':
          out += '\n';
          this.pos++;
          break;
        case 'r':
          out += '\r';
          this.pos++;
          break;
        case 't':
          out += '\t';
          this.pos++;
          break;
        case 'u': {
          const unit = this.readHex4();
          if (unit >= 0xd800 && unit <= 0xdbff) {
            if (text[this.pos] !== '\\' || text[this.pos + 1] !== 'u') this.error('unpaired surrogate escape');
            this.pos++;
            const low = this.readHex4();
            if (low < 0xdc00 || low > 0xdfff) this.error('unpaired surrogate escape');
            out += String.fromCharCode(unit, low);
          } else if (unit >= 0xdc00 && unit <= 0xdfff) {
            this.error('unpaired surrogate escape');
          } else {
            out += String.fromCharCode(unit);
          }
          break;
        }
        default:
          this.error('invalid escape in a string');
      }
      runStart = this.pos;
    }
  }

  /** At the 'u' of a \uXXXX escape; leaves pos after the four digits. */
  private readHex4(): number {
    const digits = this.text.slice(this.pos + 1, this.pos + 5);
    if (!/^[0-9A-Fa-f]{4}$/.test(digits)) this.error('invalid \\u escape');
    this.pos += 5;
    return parseInt(digits, 16);
  }

  private parseNumber(): number {
    NUMBER.lastIndex = this.pos;
    const match = NUMBER.exec(this.text);
    if (!match || match[0] === '-') this.error('invalid number');
    const literal = match[0];
    const value = Number(literal);
    if (!Number.isFinite(value)) this.error(`number ${literal} is out of range`);
    if (match[1] === undefined && match[2] === undefined && !Number.isSafeInteger(value)) {
      this.error(`integer ${literal} is beyond 2^53 - 1 and cannot be represented exactly`);
    }
    this.pos += literal.length;
    return value;
  }

  private parseLiteral<T extends JsonValue>(word: string, value: T): T {
    if (this.text.startsWith(word, this.pos)) {
      this.pos += word.length;
      return value;
    }
    return this.error('invalid literal');
  }

  private checkDepth(depth: number): void {
    if (depth > this.maxDepth) this.error(`JSON nesting is deeper than ${this.maxDepth}`);
  }

  private expect(c: string): void {
    if (this.text[this.pos] !== c) this.error(`expected '${c}'`);
    this.pos++;
  }

  private skipWhitespace(): void {
    const text = this.text;
    for (;;) {
      const c = text.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.pos++;
      else return;
    }
  }

  private error(message: string, at: number = this.pos): never {
    throw new RevpatchError('E_MANIFEST', `invalid JSON at character ${at}: ${message}`);
  }
}
