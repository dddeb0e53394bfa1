// model.h: (being written)
#pragma once
