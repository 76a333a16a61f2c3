/**
 * Property/fuzz tests for what the tunnel engines say back: wireguard-go's UAPI
 * `get=1` reply and `wg show dump` text. Local input, but it comes from another
 * program and holds the private key, so: random and mutated replies never throw,
 * what parses is well-formed, and no error message repeats a value it was given
 * (a parse error must never print the private key it choked on).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseUapiErrno, parseUapiGet } from '../../agent/engine/uapi.js';
import { parseWgDump } from '../../agent/engine/wg-tool.js';
import { seededBytes } from '../helpers/manual-clock.js';
import { fuzzIterations } from './budget.js';

const rnd = seededBytes(4242);
const hex = (n: number) => Buffer.from(rnd(n)).toString('hex');
const b64 = () => Buffer.from(rnd(32)).toString('base64');

function uapiReply(): { text: string; privateHex: string } {
  const privateHex = hex(32);
  const peers = Array.from({ length: rnd(1)[0]! % 4 }, () => [
    `public_key=${hex(32)}`, `preshared_key=${hex(32)}`, 'protocol_version=1',
    `endpoint=${rnd(1)[0]! % 2 ? '198.18.0.1:51820' : '[2001:db8::1%eth0]:1'}`,
    `last_handshake_time_sec=${rnd(1)[0]}`, 'last_handshake_time_nsec=5', 'rx_bytes=1', 'tx_bytes=18446744073709551615',
    'persistent_keepalive_interval=25', 'allowed_ip=100.96.0.2/32', 'allowed_ip=fd00::2/128',
  ].join('\n'));
  return { text: [`private_key=${privateHex}`, 'listen_port=51820', 'fwmark=0', ...peers, 'errno=0', '', ''].join('\n'), privateHex };
}

function mutate(text: string): string {
  const alphabet = '=\n_0123456789abcdefx:[]/.%- errno';
  const chars = [...text];
  const r = rnd(6);
  for (let n = 1 + (r[0]! % 6), k = 1; n > 0 && k < 6; n--, k++) {
    const at = r[k]! % Math.max(1, chars.length);
    const c = alphabet[rnd(1)[0]! % alphabet.length]!;
    const op = rnd(1)[0]! % 4;
    if (op === 0) chars[at] = c;
    else if (op === 1) chars.splice(at, 1 + (r[k]! % 20));
    else if (op === 2) chars.splice(at, 0, c);
    else chars.splice(at, 0, ...chars.slice(0, r[k]! % 200)); // duplicate a run (repeated keys, peers)
  }
  return chars.join('');
}

test('UAPI get replies: mutated and random text never throws; parsed peers are well-formed; errors never echo the private key', () => {
  let parsed = 0;
  for (let i = 0; i < fuzzIterations(3000); i++) {
    const { text, privateHex } = uapiReply();
    const input = i % 7 === 0 ? Buffer.from(rnd(rnd(1)[0]! * 4)).toString('latin1') : i % 11 === 0 ? text : mutate(text);
    const r = parseUapiGet(input);
    parseUapiErrno(input);
    if (r.ok) {
      parsed++;
      for (const p of r.value.peers) {
        assert.match(p.publicKeyHex, /^[0-9a-f]{64}$/);
        assert.ok(p.allowedIps.every((a) => typeof a === 'string' && a.length < 64));
        assert.ok(!('presharedKeyHex' in p), 'the preshared key is validated, never kept');
      }
      assert.ok(r.value.peers.length <= input.length / 20, 'output bounded by input');
    } else {
      assert.ok(!r.error.includes(privateHex) && !r.error.includes(privateHex.slice(0, 16)), r.error);
      assert.ok(r.error.length < 200, 'errors are short and say where, not what');
    }
  }
  assert.ok(parsed > 0, 'unmutated replies parse, so mutations explore near valid input');
});

test('wg show dump: mutated and random text never throws; errors never echo the keys', () => {
  for (let i = 0; i < fuzzIterations(3000); i++) {
    const priv = b64();
    const psk = b64();
    const text = [
      `${priv}\t${b64()}\t51820\toff`,
      `${b64()}\t${psk}\t198.18.0.1:51820\t100.96.0.2/32,fd00::2/128\t1700000000\t10\t20\t25`,
      `${b64()}\t(none)\t(none)\t100.96.0.3/32\t0\t0\t0\toff`,
    ].join('\n');
    const input = i % 7 === 0 ? Buffer.from(rnd(rnd(1)[0]! * 4)).toString('latin1') : i % 11 === 0 ? text : mutate(text);
    const r = parseWgDump(input);
    if (!r.ok) {
      assert.ok(!r.error.includes(priv) && !r.error.includes(psk), r.error);
      assert.ok(r.error.length < 200);
    }
  }
});
