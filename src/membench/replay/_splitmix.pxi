# splitmix64's finalizer, shared by the replay's compiled twins (included, so that it inlines where it is used):
# keys.py's `_mix` spreads a key's digits with it, and seen.py's twin its table slots.

cdef inline uint64_t splitmix64(uint64_t value) noexcept:
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL
    return value ^ (value >> 31)
