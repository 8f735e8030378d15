// Pulse counter.
// Payload (4 bytes): uint32 big-endian pulse count since power-up; the fPort
// is reported as the counter channel. Example: 0x00000102 on fPort 2 ->
// { channel: 2, count: 258 }.
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes.length < 4) {
    return { data: {}, warnings: [], errors: ['expected 4 bytes, got ' + bytes.length] };
  }
  // Multiply the top byte instead of shifting to stay unsigned.
  var count = bytes[0] * 0x1000000 + ((bytes[1] << 16) | (bytes[2] << 8) | bytes[3]);
  return { data: { channel: input.fPort, count: count }, warnings: [], errors: [] };
}

if (typeof module !== 'undefined') {
  module.exports = { decodeUplink: decodeUplink };
}
