// CRC-32 (the zlib/PNG polynomial), for the plan file's checksum footer and a checkpoint's data. Python writes it with
// zlib.crc32; a FlatBuffers verifier alone cannot notice a flipped bit inside the weights.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgetune {

uint32_t crc32(const uint8_t* data, size_t size);
// Continues `crc` (the value of the bytes before) over more bytes: zlib.crc32(data, crc).
uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t size);

}  // namespace edgetune
