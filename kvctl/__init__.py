"""kvctl: the control and client tool for KeyVal clusters."""
