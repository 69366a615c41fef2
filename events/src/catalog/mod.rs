//! Catalog: stack versions read from compose files with an `x-shiplog` block.
