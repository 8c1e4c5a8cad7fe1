module github.com/rimon-dev/rimon

go 1.26.8

require (
	github.com/google/go-tpm v0.9.8
	github.com/google/go-tpm-tools v0.4.11
)

require golang.org/x/sys v0.45.0 // indirect
