"""The benchmark's sections: each takes the prepared inputs and the options and returns its JSON part."""
