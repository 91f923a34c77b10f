fn main() {} // being written
