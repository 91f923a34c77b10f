//! Neural renderers and shape models (being written).
