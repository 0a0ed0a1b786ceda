//! Composition of the client and server stacks a profile describes. (Being written.)
