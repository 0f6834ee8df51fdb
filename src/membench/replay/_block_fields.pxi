# The positions of replay/requests.py's BLOCK_FIELDS in a GroupBlock row, for the module that writes the rows
# (replay/_pass_plan.pyx) and the one that reads them (record/_core_groups.pxi): both include this file.

from membench.replay.requests import BLOCK_FIELDS

cdef enum:  # the positions of BLOCK_FIELDS
    B_SLOT = 0
    B_ROWS
    B_EXPECT
    B_UNITS
    B_AT_NS
    B_OUTSTANDING
    B_SEQ
    B_NUMBER
    B_CAS
    B_PAYLOAD_END
    B_AFTER_END
    B_FIELDS

assert BLOCK_FIELDS == ("slot", "rows", "expect", "units", "at_ns", "outstanding", "seq", "number", "cas",
                        "payload_end", "after_end") and len(BLOCK_FIELDS) == B_FIELDS
