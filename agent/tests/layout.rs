//! The Rust mirror of `struct mop_event` must match the C compiler's layout
//! byte for byte (sizes and every field offset).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
use std::mem::{offset_of, size_of};

use mop_agent::{
    c_layout,
    ebpf::event::{HEADER_SIZE, MAX_CAPTURE, RawEvent, RawEventHeader, RawTuple},
};

fn c_offset(table: &[(&str, usize)], field: &str) -> usize {
    table
        .iter()
        .find(|(n, _)| *n == field)
        .map(|(_, o)| *o)
        .unwrap_or_else(|| panic!("C layout has no field {field}"))
}

#[test]
fn event_sizes_match_the_c_header() {
    assert_eq!(size_of::<RawEvent>(), c_layout::EVENT_SIZE);
    assert_eq!(size_of::<RawTuple>(), c_layout::TUPLE_SIZE);
    assert_eq!(MAX_CAPTURE, c_layout::MAX_CAPTURE);
    assert_eq!(HEADER_SIZE, c_offset(c_layout::EVENT_OFFSETS, "data"));
}

#[test]
fn event_offsets_match_the_c_header() {
    let rust = [
        ("ts_ns", offset_of!(RawEventHeader, ts_ns)),
        ("tgid", offset_of!(RawEventHeader, tgid)),
        ("tid", offset_of!(RawEventHeader, tid)),
        ("fd", offset_of!(RawEventHeader, fd)),
        ("kind", offset_of!(RawEventHeader, kind)),
        ("direction", offset_of!(RawEventHeader, direction)),
        ("syscall", offset_of!(RawEventHeader, syscall)),
        ("flags", offset_of!(RawEventHeader, flags)),
        ("total_len", offset_of!(RawEventHeader, total_len)),
        ("captured_len", offset_of!(RawEventHeader, captured_len)),
        ("tuple", offset_of!(RawEventHeader, tuple)),
        ("comm", offset_of!(RawEventHeader, comm)),
        ("data", offset_of!(RawEvent, data)),
    ];
    for (field, off) in rust {
        assert_eq!(
            off,
            c_offset(c_layout::EVENT_OFFSETS, field),
            "mop_event.{field}"
        );
    }
    let tuple = [
        ("saddr", offset_of!(RawTuple, saddr)),
        ("daddr", offset_of!(RawTuple, daddr)),
        ("sport", offset_of!(RawTuple, sport)),
        ("dport", offset_of!(RawTuple, dport)),
        ("family", offset_of!(RawTuple, family)),
        ("role", offset_of!(RawTuple, role)),
        ("flags", offset_of!(RawTuple, flags)),
    ];
    for (field, off) in tuple {
        assert_eq!(
            off,
            c_offset(c_layout::TUPLE_OFFSETS, field),
            "mop_tuple.{field}"
        );
    }
}
