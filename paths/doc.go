// Package paths is the plugin's Vault API surface: the framework.Path
// definitions, their fields and help, and the handlers that turn Vault
// requests into calls of the backend package and its results and errors
// into Vault responses.
package paths
