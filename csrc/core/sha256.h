// SHA-256 (FIPS 180-4), the plan's identity: a checkpoint records the SHA-256 of the plan bytes
// that wrote it, and resuming onto any other plan is refused. Python computes the same value
// with hashlib.sha256(plan_bytes).hexdigest() (tests/runtime/test_checkpoint.py checks both agree).
// A CRC-32 (core/crc32.h) guards against damage; telling two different plans apart needs a hash
// that no edit of a spec or a weight can collide with by chance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgetune {

// Lower-case hex digest, 64 characters.
std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace edgetune
