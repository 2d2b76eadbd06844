//! Dots (actor, counter) and the text form of version clocks, as clients and peers see them.
