//go:build tools

// Package tools pins the command this module builds (github.com/minio/minio).
package tools

import _ "github.com/minio/minio"
