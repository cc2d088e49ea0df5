//! SQL Server implementation of the CDC seam.
