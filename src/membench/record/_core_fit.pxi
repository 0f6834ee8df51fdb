# limits.py: how a value from the wire that does not fit its column is stored, and counted.

cdef struct Fitted:
    Num value_length
    Num flags
    Num ttl
    Num latency


cdef int fit(Fitted* f) noexcept:
    """limits.fit: each field that does not fit its column becomes its nearest value or null; returns how many."""
    cdef int changed = fit_reply(f)
    if f.ttl.present and not num_in_int64(f.ttl):
        f.ttl.huge = 0
        f.ttl.magnitude = INT64_MAX + (1 if f.ttl.negative else 0)
        changed += 1
    if f.latency.present and not num_in_uint32(f.latency):
        if f.latency.negative:
            f.latency = num_none()
        else:
            f.latency = num_of(UINT32_MAX)
        changed += 1
    return changed


cdef int fit_reply(Fitted* f) noexcept:
    """The value length and flags of fit()."""
    cdef int changed = 0
    if f.value_length.present and not num_in_uint32(f.value_length):
        f.value_length = num_none() if f.value_length.negative else num_of(UINT32_MAX)
        changed += 1
    if f.flags.present and not num_in_uint32(f.flags):
        f.flags = num_none()
        changed += 1
    return changed
