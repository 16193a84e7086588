//! Generated gRPC code for flagraft (filled in by the proto work).
