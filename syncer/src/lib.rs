//! MOP's syncer library.
