//! The generated gRPC types and services of package `sqd.v1`, included once.
#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

tonic::include_proto!("sqd.v1");
