// report.h: (being written)
#pragma once
