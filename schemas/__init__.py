"""Every Avro schema version callcharge reads or writes (`<name>.v<N>.avsc`), shipped as
package data. A consumer needs only these files and fastavro: see docs/."""
