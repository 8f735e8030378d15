// Battery voltage reporter.
// Payload (2 bytes): uint16 big-endian battery voltage in millivolts.
// A warning is added below 3300 mV. Example: 0x0E10 -> 3.6 V.
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes.length < 2) {
    return { data: {}, warnings: [], errors: ['expected 2 bytes, got ' + bytes.length] };
  }
  var mv = (bytes[0] << 8) | bytes[1];
  var warnings = mv < 3300 ? ['battery low'] : [];
  return { data: { battery_v: mv / 1000 }, warnings: warnings, errors: [] };
}

if (typeof module !== 'undefined') {
  module.exports = { decodeUplink: decodeUplink };
}
