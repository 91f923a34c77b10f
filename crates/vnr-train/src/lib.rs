//! One training loop for every vnr model (being written).
