// Temperature and relative humidity sensor.
// Payload (4 bytes): int16 big-endian temperature * 100 (°C), then int16
// big-endian relative humidity * 100 (%). Example: 0x0866 0x1194 ->
// temperature 21.5, humidity 45.
function readInt16BE(bytes, i) {
  var v = (bytes[i] << 8) | bytes[i + 1];
  return v & 0x8000 ? v - 0x10000 : v;
}

function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes.length < 4) {
    return { data: {}, warnings: [], errors: ['expected 4 bytes, got ' + bytes.length] };
  }
  return {
    data: {
      temperature: readInt16BE(bytes, 0) / 100,
      humidity: readInt16BE(bytes, 2) / 100,
    },
    warnings: [],
    errors: [],
  };
}

// TTN's console calls the global decodeUplink; Node loads it via require.
if (typeof module !== 'undefined') {
  module.exports = { decodeUplink: decodeUplink };
}
