package net
import "errors"
var errAddressConflictTODO = errors.New("placeholder until tree.ErrAddressConflict lands")
